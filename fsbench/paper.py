"""The accuracies reported by the MTL paper, as data.

Sun, Liu, Chua, Schiele: "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019.
5-way accuracy (%) on the test split, 15 queries per class, 600 test episodes. MAML, MAML + HT
and ProtoNets use a Conv4 backbone; the others a ResNet-12. The paper reports no ProtoNets
numbers on FC100.

Keys are fsbench method names (the plugin names) and dataset names (``miniimagenet``,
``fc100``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Paper name of each method, as printed in its tables.
METHOD_LABELS: dict[str, str] = {
    "maml": "MAML",
    "maml_ht": "MAML + HT",
    "protonet": "ProtoNets",
    "scratch": "Train from scratch",
    "finetune": "Finetune on pre-trained model",
    "mtl": "MTL",
    "mtl_ht": "MTL + HT",
}

#: Row order of the paper's ablation table.
ABLATION_ORDER: tuple[str, ...] = ("scratch", "finetune", "mtl", "mtl_ht")

#: Row order of the paper's main table (other methods follow alphabetically).
PAPER_ORDER: tuple[str, ...] = (
    "maml",
    "maml_ht",
    "protonet",
    "scratch",
    "finetune",
    "mtl",
    "mtl_ht",
)

#: Backbone the paper used for each method.
PAPER_BACKBONES: dict[str, str] = {
    "maml": "conv4",
    "maml_ht": "conv4",
    "protonet": "conv4",
    "scratch": "resnet12",
    "finetune": "resnet12",
    "mtl": "resnet12",
    "mtl_ht": "resnet12",
}

#: The paper's evaluation protocol; its numbers apply to runs with these settings.
PAPER_WAY = 5
PAPER_QUERY = 15
PAPER_EPISODES = 600
PAPER_EVAL_SPLIT = "test"

_COLUMNS: tuple[tuple[str, int], ...] = (
    ("miniimagenet", 1),
    ("miniimagenet", 5),
    ("fc100", 1),
    ("fc100", 5),
    ("fc100", 10),
)

_ROWS: dict[str, tuple[float | None, ...]] = {
    #           mini 1  mini 5  FC 1   FC 5   FC 10
    "maml": (48.7, 63.1, 38.1, 50.4, 56.2),
    "maml_ht": (49.1, 64.1, 39.9, 51.7, 57.2),
    "protonet": (49.4, 68.2, None, None, None),
    "scratch": (45.3, 64.6, 38.4, 52.6, 58.6),
    "finetune": (55.9, 71.4, 41.6, 54.9, 61.6),
    "mtl": (60.2, 74.3, 43.6, 55.4, 62.4),
    "mtl_ht": (61.2, 75.5, 45.1, 57.6, 63.4),
}

#: ``(method, dataset, shot) -> accuracy %`` for every number the paper reports.
PAPER_RESULTS: dict[tuple[str, str, int], float] = {
    (method, dataset, shot): value
    for method, values in _ROWS.items()
    for (dataset, shot), value in zip(_COLUMNS, values, strict=True)
    if value is not None
}


@dataclass(frozen=True)
class PaperResult:
    method: str
    dataset: str
    shot: int
    accuracy: float
    backbone: str


def paper_accuracy(
    method: str, dataset: str, shot: int, way: int = PAPER_WAY, eval_split: str = PAPER_EVAL_SPLIT
) -> float | None:
    """The paper's accuracy (%) for this setting, or None where it reports none.

    Only 5-way test-split settings have paper numbers; a validation-split run is never compared
    with a test number.
    """
    if way != PAPER_WAY or eval_split != PAPER_EVAL_SPLIT:
        return None
    return PAPER_RESULTS.get((method, dataset.lower(), int(shot)))


def paper_result(method: str, dataset: str, shot: int) -> PaperResult | None:
    """The paper's number with its backbone, or None."""
    acc = paper_accuracy(method, dataset, shot)
    if acc is None:
        return None
    return PaperResult(method, dataset.lower(), int(shot), acc, PAPER_BACKBONES[method])


def method_label(method: str) -> str:
    """The paper's name for ``method`` (the method name itself when the paper has none)."""
    return METHOD_LABELS.get(method, method)
