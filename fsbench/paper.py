"""The accuracies reported by the MTL paper, as data.

Sun, Liu, Chua, Schiele: "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019.
5-way accuracy (%) on the test split, 15 queries per class, 600 test episodes. MAML, MAML + HT
and ProtoNets use a Conv4 backbone; the others a ResNet-12. The paper reports no ProtoNets
numbers on FC100. The comparison rows quoted from other papers (their own protocols): MatchingNets
(Ravi & Larochelle's re-implementation, Conv4) and Meta-LSTM (Conv4), miniImageNet only; TADAM
(ResNet-12; evaluated on 10 x 500 episodes with 100 queries).

Keys are fsbench method names (the plugin names) and dataset names (``miniimagenet``,
``fc100``).

Beyond the paper: the strong simple baselines published since (SimpleShot, Baseline++, RFS,
Meta-Baseline) with their own papers' miniImageNet numbers and backbones (:data:`BEYOND_PAPER`).
``report --paper`` lists them after the paper's rows, their numbers marked †; ours − theirs only
where a run follows fsbench's paper protocol on the original's backbone (the method's ``paper``
preset).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Paper name of each method, as printed in its tables.
METHOD_LABELS: dict[str, str] = {
    "matchingnet": "MatchingNets",
    "meta_lstm": "Meta-LSTM",
    "tadam": "TADAM",
    "maml": "MAML",
    "maml_ht": "MAML + HT",
    "protonet": "ProtoNets",
    "scratch": "Train from scratch",
    "finetune": "Finetune on pre-trained model",
    "mtl": "MTL",
    "mtl_ht": "MTL + HT",
    "baselinepp": "Baseline++",
    "simpleshot": "SimpleShot (CL2N)",
    "rfs": "RFS-distill",
    "meta_baseline": "Meta-Baseline",
}

#: Row order of the paper's ablation table.
ABLATION_ORDER: tuple[str, ...] = ("scratch", "finetune", "mtl", "mtl_ht")

#: Row order of the paper's main table (other methods follow alphabetically).
PAPER_ORDER: tuple[str, ...] = (
    "matchingnet",
    "meta_lstm",
    "tadam",
    "maml",
    "maml_ht",
    "protonet",
    "scratch",
    "finetune",
    "mtl",
    "mtl_ht",
)


@dataclass(frozen=True)
class BeyondPaper:
    """A method the MTL paper does not report, with its own paper's 5-way test accuracies (%).

    ``backbone``: fsbench's name of the original's backbone (the method's ``paper`` preset uses
    it); ``protocol``: how the original evaluated, where it is not fsbench's.
    """

    source: str
    backbone: str
    results: dict[tuple[str, int], float]
    protocol: str = ""


#: The strong simple baselines since MTL, in publication order, with their published numbers.
BEYOND_PAPER: dict[str, BeyondPaper] = {
    "baselinepp": BeyondPaper(
        "Chen et al., A Closer Look at Few-shot Classification (ICLR 2019), Conv-4 with data "
        "augmentation (ResNet-18 at 224 px: 51.87 / 75.68)", "conv4",
        {("miniimagenet", 1): 48.24, ("miniimagenet", 5): 66.43}),
    "simpleshot": BeyondPaper(
        "Wang et al., SimpleShot (arXiv:1911.04623, 2019), Table 1, Conv-4, CL2N", "conv4",
        {("miniimagenet", 1): 49.69, ("miniimagenet", 5): 66.92}, "10,000 episodes"),
    "rfs": BeyondPaper(
        "Tian et al., Rethinking Few-Shot Image Classification (ECCV 2020), Table 1, ResNet-12, "
        "RFS-distill (RFS-simple: 62.02 / 79.64)", "resnet12",
        {("miniimagenet", 1): 64.82, ("miniimagenet", 5): 82.14},
        "each support image augmented into 5 copies"),
    "meta_baseline": BeyondPaper(
        "Chen et al., Meta-Baseline (ICCV 2021), ResNet-12 64-128-256-512 (Classifier-Baseline: "
        "58.91 / 77.76)", "resnet12_mtl",
        {("miniimagenet", 1): 63.17, ("miniimagenet", 5): 79.26}, "8,000 episodes of 80-px images"),
}
BEYOND_PAPER_ORDER: tuple[str, ...] = tuple(BEYOND_PAPER)

#: The rows of ``report --paper``: the paper's, then those beyond it.
COMPARISON_ORDER: tuple[str, ...] = PAPER_ORDER + BEYOND_PAPER_ORDER

#: Backbone the paper used for each method.
PAPER_BACKBONES: dict[str, str] = {
    "matchingnet": "conv4",  # Ravi & Larochelle's re-implementation: 4 conv layers of 32 filters
    "meta_lstm": "conv4",  # 4 conv layers of 32 filters
    "tadam": "resnet12",
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
    "matchingnet": (43.4, 55.3, None, None, None),
    "meta_lstm": (43.6, 60.6, None, None, None),
    "tadam": (58.5, 76.7, 40.1, 56.1, 61.6),
    "maml": (48.7, 63.1, 38.1, 50.4, 56.2),
    "maml_ht": (49.1, 64.1, 39.9, 51.7, 57.2),
    "protonet": (49.4, 68.2, None, None, None),
    "scratch": (45.3, 64.6, 38.4, 52.6, 58.6),
    "finetune": (55.9, 71.4, 41.6, 54.9, 61.6),
    "mtl": (60.2, 74.3, 43.6, 55.4, 62.4),
    "mtl_ht": (61.2, 75.5, 45.1, 57.6, 63.4),
}

#: The settings of the paper's comparison table: (dataset, shot), 5-way, test split.
PAPER_COLUMNS = _COLUMNS

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
    """The paper's accuracy (%) for this setting, or None where it reports none; for a method
    beyond the paper (:data:`BEYOND_PAPER`), its own paper's number.

    Only 5-way test-split settings have paper numbers; a validation-split run is never compared
    with a test number.
    """
    if way != PAPER_WAY or eval_split != PAPER_EVAL_SPLIT:
        return None
    if method in BEYOND_PAPER:
        return BEYOND_PAPER[method].results.get((dataset.lower(), int(shot)))
    return PAPER_RESULTS.get((method, dataset.lower(), int(shot)))


def protocol_differences(
    *, preset: str, backbone: str, paper_backbone: str, eval_split: str, episodes: int,
    query: int, way: int,
) -> list[str]:
    """How a run's protocol differs from the paper's (empty: ours - paper is meaningful).

    The paper's protocol: the ``paper`` preset on its backbone (``paper_backbone``, the method's
    ``paper`` preset backbone as the run recorded it; unknown for older runs), the test split,
    5-way, 15 queries, 600 episodes.
    """
    out = []
    if preset != "paper":
        out.append(f"preset {preset or '?'}, not paper")
    if paper_backbone and backbone != paper_backbone:
        out.append(f"backbone {backbone}, not {paper_backbone}")
    if eval_split != PAPER_EVAL_SPLIT:
        out.append(f"{eval_split} split, not {PAPER_EVAL_SPLIT}")
    if way != PAPER_WAY:
        out.append(f"{way}-way, not {PAPER_WAY}")
    if query != PAPER_QUERY:
        out.append(f"{query} queries, not {PAPER_QUERY}")
    if episodes != PAPER_EPISODES:
        out.append(f"{episodes} episodes, not {PAPER_EPISODES}")
    return out


def paper_result(method: str, dataset: str, shot: int) -> PaperResult | None:
    """The paper's number with its backbone, or None."""
    acc = paper_accuracy(method, dataset, shot)
    if acc is None:
        return None
    backbone = BEYOND_PAPER[method].backbone if method in BEYOND_PAPER else PAPER_BACKBONES[method]
    return PaperResult(method, dataset.lower(), int(shot), acc, backbone)


#: Marks a number that is not the MTL paper's but a method's own paper's.
BEYOND_MARK = " †"


def paper_mark(method: str) -> str:
    """:data:`BEYOND_MARK` for a method beyond the paper, else nothing."""
    return BEYOND_MARK if method in BEYOND_PAPER else ""


def beyond_paper_notes(methods: Iterable[str]) -> list[str]:
    """One note per method beyond the paper among ``methods``: where its † number comes from."""
    present = set(methods)
    notes = []
    for method in BEYOND_PAPER_ORDER:
        if method in present:
            ref = BEYOND_PAPER[method]
            protocol = f" (the original's test: {ref.protocol})" if ref.protocol else ""
            notes.append(f"† {method} ({method_label(method)}) is beyond the paper: its number is "
                         f"the original's, {ref.source}; Δ only on fsbench's paper protocol with "
                         f"backbone {ref.backbone}{protocol}.")
    return notes


def method_label(method: str) -> str:
    """The paper's name for ``method`` (the method name itself when the paper has none)."""
    return METHOD_LABELS.get(method, method)
