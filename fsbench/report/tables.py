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
from .labels import (
    VARIANT_KEYS,
    column_label,
    column_sort_key,
    format_acc,
    method_sort_key,
    row_labels,
)


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
    # Row and column order.
    row_keys = sorted(
        {
            (r.row, r.method, tuple(str(getattr(r, k)) for k in VARIANT_KEYS))
            for r in agg.itertuples()
        },
        key=lambda t: (method_sort_key(t[1], order), t[2]),
    )
    rows = list(dict.fromkeys(t[0] for t in row_keys))
    col_keys = sorted(
        {(r.dataset, r.way, r.shot, r.eval_split) for r in agg.itertuples()}, key=column_sort_key
    )
    cols = [column_label(*k) for k in col_keys]

    row_method = {r.row: r.method for r in agg.itertuples()}
    if paper and not ablation:
        # The paper's whole comparison table: every method and setting it reports, measured or
        # not ("–" where no run is); other runs keep their own rows and columns.
        measured = set(row_method.values())
        for method in COMPARISON_ORDER:
            if method not in measured:
                rows.append(method)
                row_method[method] = method
        rows.sort(key=lambda row: method_sort_key(row_method[row], order))
        for dataset, shot in PAPER_COLUMNS:
            if (dataset, PAPER_WAY, shot, PAPER_EVAL_SPLIT) not in col_keys:
                col_keys.append((dataset, PAPER_WAY, shot, PAPER_EVAL_SPLIT))
        col_keys.sort(key=column_sort_key)
        cols = [column_label(*k) for k in col_keys]
    values = agg.pivot(index="row", columns="col", values="accuracy").reindex(
        index=rows, columns=cols
    )
    lookup = {(r.row, r.col): r for r in agg.itertuples()}

    out_cols: list[str] = []
    cell_data: dict[str, list[str]] = {}
    marked_data: dict[str, list[bool]] = {}
    any_paper = False
    footnotes: dict[str, int] = {}  # protocol differences -> footnote number
    for col_key, col in zip(col_keys, cols, strict=True):
        rounded = values[col].round(1)
        best = rounded.max() if rounded.notna().sum() >= 2 else math.nan
        ours, mark = [], []
        for row in rows:
            rec = lookup.get((row, col))
            ours.append(format_acc(rec.accuracy, rec.ci95, rec.n_seeds, rec.seed_ci95) if rec else "")
            mark.append(bool(rec is not None and round(rec.accuracy, 1) == best))
        out_cols.append(col)
        cell_data[col], marked_data[col] = ours, mark
        if not paper:
            continue
        dataset, way, shot, split = col_key
        # The paper's number for the setting (its test split); a Δ only on the paper's protocol.
        reported = [paper_accuracy(row_method[row], dataset, shot, way) for row in rows]
        if all(p is None for p in reported):
            continue
        any_paper = True
        paper_col, diff_col = f"{col} paper", f"{col} Δ"
        paper_cells, diff_cells = [], []
        for row, ref in zip(rows, reported, strict=True):
            rec = lookup.get((row, col))
            paper_cells.append("" if ref is None else f"{ref:.1f}{paper_mark(row_method[row])}")
            if ref is None or rec is None:
                diff_cells.append("")
                continue
            differences = protocol_differences(
                preset=rec.preset, backbone=rec.backbone, paper_backbone=rec.paper_backbone,
                eval_split=rec.eval_split, episodes=rec.episodes, query=rec.query, way=rec.way)
            if differences:
                mark_no = footnotes.setdefault("; ".join(differences), len(footnotes) + 1)
                diff_cells.append(f"— [{mark_no}]")
            else:
                diff_cells.append(f"{rec.accuracy - ref:+.1f}")
        out_cols += [paper_col, diff_col]
        cell_data[paper_col], cell_data[diff_col] = paper_cells, diff_cells
        marked_data[paper_col] = marked_data[diff_col] = [False] * len(rows)

    index = pd.Index(rows, name="method")
    cells = pd.DataFrame(cell_data, index=index, columns=out_cols)
    marked = pd.DataFrame(marked_data, index=index, columns=out_cols)

    title = "Ablation: " if ablation else ""
    ways = sorted(set(agg["way"]))
    title += f"{'/'.join(map(str, ways))}-way accuracy (%), mean ± 95% CI"
    notes = [f"95% CI over episodes, {CI_FORMULA}; best per column marked (bold, or * in CSV)."]
    formulas = sorted({f for fs in agg["ci_formulas"] for f in fs if f and f != CI_FORMULA})
    if formulas:
        notes.append(f"Some runs recorded another CI formula: {', '.join(formulas)}.")
    notes += seed_notes(agg)
    dropped = int(agg["duplicates_dropped"].sum())
    if dropped:
        notes.append(
            f"{dropped} duplicate run(s) (same configuration and seed) ignored; newest kept."
        )
    if (agg["eval_split"] == "val").any():
        notes.append(
            "Columns marked (val) are VALIDATION-split results, not test results; "
            "do not compare them with test numbers."
        )
    if paper:
        if any_paper:
            notes.append(
                "paper: Sun et al., Meta-Transfer Learning for Few-Shot Learning (CVPR 2019), "
                "test split; MatchingNets, Meta-LSTM, MAML, MAML + HT and ProtoNets with Conv4, the "
                "others ResNet-12. "
                "Δ = ours - paper (points), only where a run follows the paper's protocol "
                "(paper preset and backbone, test split, 5-way, 15 queries, 600 episodes)."
            )
            notes += [f"— [{n}]: not the paper's protocol ({why})." for why, n in footnotes.items()]
            notes += beyond_paper_notes(row_method[row] for row in rows)
        else:
            notes.append("The paper reports no numbers for these methods and settings.")
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=values)


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
    """A renderable view of :func:`paired_table`'s result."""
    reference = ", ".join(sorted(set(paired["reference"])))
    diff_col = f"Δ vs {reference} (points)"
    settings = [
        column_label(r.dataset, r.way, r.shot, r.eval_split) + f", seed {r.seed}"
        for r in paired.itertuples()
    ]
    labels = paired["method"].tolist()
    dup = pd.Series(list(zip(labels, settings, strict=True))).duplicated(keep=False)
    labels = [
        f"{m} [{rid}]" if d else m for m, rid, d in zip(labels, paired["run_id"], dup, strict=True)
    ]
    cells = pd.DataFrame(
        {
            "setting": settings,
            "episodes": [str(n) for n in paired["n"]],
            "accuracy": [f"{a:.1f}" for a in paired["accuracy"]],
            reference + " accuracy": [f"{a:.1f}" for a in paired["reference_accuracy"]],
            diff_col: [
                f"{d:+.2f} ± {c:.2f}"
                for d, c in zip(paired["mean_diff"], paired["ci95"], strict=True)
            ],
            "significant": ["yes" if s else "" for s in paired["significant"]],
        },
        index=pd.Index(labels, name="method"),
    )
    marked = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    marked[diff_col] = paired["significant"].to_numpy(bool)
    notes = [
        f"Per-episode differences (method - {reference}) on identical episodes; mean ± 95% CI "
        f"({CI_FORMULA}). Marked: the CI excludes 0."
    ]
    if (paired["eval_split"] == "val").any():
        notes.append("Settings marked (val) are VALIDATION-split results, not test results.")
    title = f"Paired comparison against {reference}"
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=paired)


def seed_paired_view(seed_paired: pd.DataFrame) -> TableView:
    """A renderable view of :func:`~fsbench.report.aggregate.seed_paired_table`'s result."""
    reference = ", ".join(sorted(set(seed_paired["reference"])))
    diff_col = f"Δ vs {reference} (points)"
    cells = pd.DataFrame(
        {
            "setting": [column_label(r.dataset, r.way, r.shot, r.eval_split)
                        + f", episode seed {r.episode_seed}" for r in seed_paired.itertuples()],
            "seeds": [",".join(map(str, s)) for s in seed_paired["seeds"]],
            "accuracy": [f"{a:.1f}" for a in seed_paired["accuracy"]],
            reference + " accuracy": [f"{a:.1f}" for a in seed_paired["reference_accuracy"]],
            diff_col: [f"{d:+.2f}" + ("" if c != c else f" ± {c:.2f}")
                       for d, c in zip(seed_paired["mean_diff"], seed_paired["ci95"], strict=True)],
            "significant": ["yes" if s else "" for s in seed_paired["significant"]],
        },
        index=pd.Index(seed_paired["method"].tolist(), name="method"),
    )
    marked = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    marked[diff_col] = seed_paired["significant"].to_numpy(bool)
    notes = [
        f"Across training seeds: the mean of the per-seed paired differences (method - "
        f"{reference}, same seed, same episodes) and its 95% CI, {SEED_CI_FORMULA}. "
        "Marked: the CI excludes 0. A setting with one seed has no such interval."
    ]
    title = f"Paired comparison against {reference}, across training seeds"
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=seed_paired)
