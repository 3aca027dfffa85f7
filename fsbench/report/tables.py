"""The report's tables as :class:`TableView`: accuracy (and ablation) tables, paired tables.

A view holds string cells, which cells to mark (best per column, or a significant difference),
a title and notes; :mod:`fsbench.report.render` turns it into text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from fsbench.paper import (
    ABLATION_ORDER,
    COMPARISON_ORDER,
    PAPER_COLUMNS,
    PAPER_EVAL_SPLIT,
    PAPER_WAY,
    beyond_paper_notes,
    paper_accuracy,
    paper_mark,
    protocol_differences,
)
from fsbench.results import ResultsError
from fsbench.stats import CI_FORMULA, SEED_CI_FORMULA

from .aggregate import aggregate
from .cells import dropped_note, legacy_note
from .labels import column_label, column_sort_key, format_acc, method_sort_key, row_labels


@dataclass
class TableView:
    """Table data ready to render: string cells, which cells to mark, a title and notes.

    ``cells`` is a DataFrame of strings (``""`` = empty) whose index holds the row labels;
    ``marked`` is a same-shaped boolean DataFrame (best per column, or a significant
    difference): bold in rich/markdown/LaTeX/HTML, a trailing ``*`` in CSV. ``values`` keeps the
    numbers behind the cells for programmatic use.
    """

    title: str
    cells: pd.DataFrame
    marked: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    values: pd.DataFrame | None = None


def accuracy_table(df: pd.DataFrame, *, ablation: bool = False, paper: bool = False) -> TableView:
    """Methods as rows, ``dataset shot`` as columns, cells ``mean ± CI`` (best per column marked).

    ``ablation`` keeps only the paper's ablation rows (train from scratch, finetune, MTL,
    MTL + HT) in the paper's order and names. ``paper`` renders the paper's comparison table:
    every method and setting the paper reports (measured or not: an empty cell where no run is),
    the paper's number beside each column and the difference ours - paper where a run follows
    the paper's protocol (see :mod:`fsbench.paper`).
    """
    if df.empty:
        raise ResultsError("no runs to report")
    agg = aggregate(df)
    order: Sequence[str] = COMPARISON_ORDER  # the paper's rows, then those beyond it (fsbench.paper)
    if ablation:
        agg = agg[agg["method"].isin(ABLATION_ORDER)].reset_index(drop=True)
        if agg.empty:
            raise ResultsError(
                f"--ablation needs runs of {', '.join(ABLATION_ORDER)}; found only "
                f"{', '.join(sorted(set(df['method'])))}"
            )
        order = ABLATION_ORDER
    agg = agg.assign(row=row_labels(agg, paper_names=ablation))
    agg["col"] = [column_label(r.dataset, r.way, r.shot, r.eval_split) for r in agg.itertuples()]
    rows, col_keys, row_method = _layout(agg, order, paper and not ablation)
    cols = [column_label(*k) for k in col_keys]
    values = agg.pivot(index="row", columns="col", values="accuracy").reindex(index=rows, columns=cols)
    lookup = {(r.row, r.col): r for r in agg.itertuples()}

    cell_data: dict[str, list[str]] = {}
    marked_data: dict[str, list[bool]] = {}
    footnotes: dict[str, int] = {}  # protocol differences -> footnote number
    any_paper = False
    for col_key, col in zip(col_keys, cols, strict=True):
        rounded = values[col].round(1)
        best = rounded.max() if rounded.notna().sum() >= 2 else math.nan
        recs = [lookup.get((row, col)) for row in rows]
        cell_data[col] = [format_acc(r.accuracy, r.ci95, r.n_seeds, r.seed_ci95) if r else "" for r in recs]
        marked_data[col] = [bool(r is not None and round(r.accuracy, 1) == best) for r in recs]
        beside = _paper_cells(col_key, [row_method[row] for row in rows], recs, footnotes) if paper else None
        if beside is not None:
            any_paper = True
            cell_data[f"{col} paper"], cell_data[f"{col} Δ"] = beside
            marked_data[f"{col} paper"] = marked_data[f"{col} Δ"] = [False] * len(rows)

    index = pd.Index(rows, name="method")
    cells = pd.DataFrame(cell_data, index=index, columns=list(cell_data))
    marked = pd.DataFrame(marked_data, index=index, columns=list(cell_data))
    ways = sorted(set(agg["way"]))
    title = ("Ablation: " if ablation else "") + f"{'/'.join(map(str, ways))}-way accuracy (%), mean ± 95% CI"
    notes = _accuracy_notes(agg) + (_paper_notes(any_paper, footnotes, [row_method[row] for row in rows]) if paper else [])
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=values)


def _layout(agg: pd.DataFrame, order: Sequence[str], whole_paper: bool):
    """Rows (labels, in the paper's method order), column keys and each row's method; with
    ``whole_paper`` every method and setting of the paper's table, measured or not."""
    row_method = {r.row: r.method for r in agg.itertuples()}
    col_keys = sorted({(r.dataset, r.way, r.shot, r.eval_split) for r in agg.itertuples()}, key=column_sort_key)
    if whole_paper:  # "–" where no run is; other runs keep their own rows and columns
        for method in COMPARISON_ORDER:
            if method not in row_method.values():
                row_method[method] = method
        col_keys += [(d, PAPER_WAY, shot, PAPER_EVAL_SPLIT) for d, shot in PAPER_COLUMNS
                     if (d, PAPER_WAY, shot, PAPER_EVAL_SPLIT) not in col_keys]
        col_keys.sort(key=column_sort_key)
    rows = sorted(row_method, key=lambda row: (method_sort_key(row_method[row], order), row))
    return rows, col_keys, row_method


def _paper_cells(col_key: tuple, methods: list[str], recs: list, footnotes: dict[str, int]):
    """The paper's number beside a column and ours - paper (only on the paper's protocol, else a
    footnote saying what differs); None when the paper reports nothing for the column."""
    dataset, way, shot, _ = col_key
    reported = [paper_accuracy(method, dataset, shot, way) for method in methods]
    if all(p is None for p in reported):
        return None
    paper_cells, diff_cells = [], []
    for method, rec, ref in zip(methods, recs, reported, strict=True):
        paper_cells.append("" if ref is None else f"{ref:.1f}{paper_mark(method)}")
        if ref is None or rec is None:
            diff_cells.append("")
            continue
        differences = protocol_differences(
            preset=rec.preset, backbone=rec.backbone, paper_backbone=rec.paper_backbone,
            eval_split=rec.eval_split, episodes=rec.episodes, query=rec.query, way=rec.way)
        if differences:
            diff_cells.append(f"— [{footnotes.setdefault('; '.join(differences), len(footnotes) + 1)}]")
        else:
            diff_cells.append(f"{rec.accuracy - ref:+.1f}")
    return paper_cells, diff_cells


def _accuracy_notes(agg: pd.DataFrame) -> list[str]:
    notes = [f"95% CI over episodes, {CI_FORMULA}; best per column marked (bold, or * in CSV)."]
    formulas = sorted({f for fs in agg["ci_formulas"] for f in fs if f and f != CI_FORMULA})
    if formulas:
        notes.append(f"Some runs recorded another CI formula: {', '.join(formulas)}.")
    notes += seed_notes(agg)
    dropped = dict(zip(agg["fingerprint"], (list(ids) for ids in agg["dropped_run_ids"]), strict=True))
    legacy = int(agg.loc[~agg["recorded"].astype(bool), "n_seeds"].sum())
    notes += [note for note in (dropped_note(dropped), legacy_note(legacy)) if note]
    if (agg["eval_split"] == "val").any():
        notes.append("Columns marked (val) are VALIDATION-split results, not test results; "
                     "do not compare them with test numbers.")
    return notes


def _paper_notes(any_paper: bool, footnotes: dict[str, int], methods: list[str]) -> list[str]:
    if not any_paper:
        return ["The paper reports no numbers for these methods and settings."]
    return [
        "paper: Sun et al., Meta-Transfer Learning for Few-Shot Learning (CVPR 2019), test split; "
        "MatchingNets, Meta-LSTM, MAML, MAML + HT and ProtoNets with Conv4, the others ResNet-12. "
        "Δ = ours - paper (points), only where a run follows the paper's protocol (paper preset and "
        "backbone, test split, 5-way, 15 queries, 600 episodes).",
        *(f"— [{n}]: not the paper's protocol ({why})." for why, n in footnotes.items()),
        *beyond_paper_notes(methods),
    ]


def seed_notes(agg: pd.DataFrame) -> list[str]:
    """What the intervals of an accuracy table cover, by how many training seeds stand behind it."""
    if (agg["n_seeds"] == 1).all():
        return ["One training seed per cell: the CI covers the test episodes only, not the "
                "spread between training runs (run several with --seed 0,1,2)."]
    notes = ["Several training seeds: accuracy is the mean of the per-seed accuracies; "
             f"'seeds ± c, n=k' is the 95% CI between the k seeds, {SEED_CI_FORMULA}; the first "
             "± stays over episodes (" + ", ".join(sorted(set(agg["ci_source"]))) + ": the "
             "episodes' accuracies averaged over seeds that share them, else pooled)."]
    if (agg["n_seeds"] == 1).any():
        notes.append("Cells without 'seeds' have one training seed: their CI covers episodes only.")
    return notes


def paired_view(paired: pd.DataFrame) -> TableView:
    """A renderable view of :func:`~fsbench.report.aggregate.paired_table`'s result: a row per
    cell, training seed and reference variant."""
    reference = ", ".join(sorted(set(paired["reference"])))
    settings = [column_label(r.dataset, r.way, r.shot, r.eval_split) + f", seed {r.seed}"
                for r in paired.itertuples()]
    view = _paired_view(paired, reference, {"setting": settings, "episodes": [str(n) for n in paired["n"]]})
    view.notes.insert(0, f"Per-episode differences (method - {reference}) on identical episodes, one "
                         f"run of each side per training seed; mean ± 95% CI ({CI_FORMULA}). "
                         "Marked: the CI excludes 0.")
    view.title = f"Paired comparison against {reference}"
    return view


def seed_paired_view(seed_paired: pd.DataFrame) -> TableView:
    """A renderable view of :func:`~fsbench.report.aggregate.seed_paired_table`'s result."""
    reference = ", ".join(sorted(set(seed_paired["reference"])))
    settings = [column_label(r.dataset, r.way, r.shot, r.eval_split)
                + f", {r.episodes} episodes, episode seed {r.episode_seed}" for r in seed_paired.itertuples()]
    view = _paired_view(seed_paired, reference, {
        "setting": settings, "seeds": [",".join(map(str, s)) for s in seed_paired["seeds"]]})
    view.notes.insert(0, f"Across training seeds: the mean of the per-seed paired differences (method - "
                         f"{reference}, same seed, same episodes; each seed once) and its 95% CI, "
                         f"{SEED_CI_FORMULA}. Marked: the CI excludes 0. A setting with one seed has "
                         "no such interval.")
    view.title = f"Paired comparison against {reference}, across training seeds"
    return view


def _paired_view(paired: pd.DataFrame, reference: str, first: dict[str, list[str]]) -> TableView:
    """The columns both paired views share: the reference variant (when there are several),
    accuracies, the difference and its verdict; rows labelled by cell."""
    diff_col = f"Δ vs {reference} (points)"
    columns = dict(first)
    if paired["reference_label"].nunique() > 1:
        columns["reference"] = paired["reference_label"].tolist()
    columns["accuracy"] = [f"{a:.1f}" for a in paired["accuracy"]]
    columns[reference + " accuracy"] = [f"{a:.1f}" for a in paired["reference_accuracy"]]
    columns[diff_col] = [f"{d:+.2f}" + ("" if c != c else f" ± {c:.2f}")
                         for d, c in zip(paired["mean_diff"], paired["ci95"], strict=True)]
    columns["significant"] = [{"significant": "yes", "not significant": "no"}.get(v, v)
                              for v in paired["verdict"]]
    cells = pd.DataFrame(columns, index=pd.Index(paired["label"].tolist(), name="method"))
    marked = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    marked[diff_col] = paired["significant"].to_numpy(bool)
    notes = []
    if (~paired["testable"].astype(bool)).any():
        notes.append("not testable: the differences have no spread (all equal, or a single one), so "
                     "there is no interval to test; never read as significant.")
    if (paired["eval_split"] == "val").any():
        notes.append("Settings marked (val) are VALIDATION-split results, not test results.")
    return TableView(title="", cells=cells, marked=marked, notes=notes, values=paired)
