"""The README's real-data table, generated from one sweep of every method's ``quick`` preset.

Reads the runs of ``fsbench sweep benchmarks/quick_real.toml`` (miniImageNet val, 5-way 1- and
5-shot, seed 0) and prints a markdown table: per method and shot the accuracy ± 95% CI, the
paired difference against finetune on the same episodes, and the training and evaluation wall
time; under it the date of the newest run, the commit the runs recorded and the machine. With
``--readme`` the table replaces the block between ``<!-- quick-real:begin -->`` and
``<!-- quick-real:end -->`` in that file, so a release's change shows in the README's diff.

    python benchmarks/quick_real_table.py runs/quick_real --readme README.md
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np

from fsbench.report.labels import method_sort_key
from fsbench.results import load_runs
from fsbench.stats import paired_difference

BEGIN, END = "<!-- quick-real:begin -->", "<!-- quick-real:end -->"
REFERENCE = "finetune"
GRID = Path(__file__).resolve().parent / "quick_real.toml"


def _cell(run) -> str:
    return f"{run.accuracy:.2f} ± {run.ci95:.2f}"


def _paired(run, ref) -> str:
    if ref is None or run.method == REFERENCE or run.episode_bank != ref.episode_bank:
        return ""
    res = paired_difference(np.asarray(ref.episode_acc) * 100, np.asarray(run.episode_acc) * 100)
    text = f"{res.mean_diff:+.2f} ± {res.ci95:.2f}"
    return f"**{text}**" if res.significant else text


def _seconds(run) -> str:
    train = (run.pretrain_seconds or 0.0) + (run.train_seconds or 0.0)
    return f"{train:,.0f} / {run.eval_seconds:,.0f}"


def shared_pretraining(df) -> list[str]:
    """One phrase per backbone that runs read from the cache (``pretrain_seconds`` 0, yet a
    pre-training history): its head, epochs, seconds and the methods that share it. The sweep
    pre-trains each such backbone once, as a job of its own, so no run's time includes it."""
    found: dict[tuple[str, int, float], set[str]] = {}
    for run in df.itertuples():
        pre = [h for h in run.history or [] if h.get("phase") == "pretrain"]
        if run.pretrain_seconds or not pre:
            continue
        key = ((run.settings or {}).get("pretrain.head", "linear"), len(pre), float(pre[-1]["seconds"]))
        found.setdefault(key, set()).add(run.method)
    return [f"{head} head, {epochs} epochs, {seconds:,.0f} s ({', '.join(sorted(methods))})"
            for (head, epochs, seconds), methods in sorted(found.items())]


def sweep_grid() -> dict:
    """The sweep's grid (``benchmarks/quick_real.toml``): its methods and shots."""
    return tomllib.loads(GRID.read_text())


def table(root: Path, expected: list[str] | None = None, shots: list[int] | None = None) -> str:
    """The markdown table of the runs under ``root``; ``expected`` methods (and ``shots``) without
    a run still get their row, marked ``not run``, and are listed under the table."""
    df = load_runs(root)
    df = df[df["seed"] == 0]  # other training seeds may share the folder (seed-level comparisons)
    shots = sorted(set(df["shot"]) | set(shots or []))
    by_key = {(r.method, r.shot): r for r in df.sort_values("created").itertuples()}
    methods = sorted(set(df["method"]) | set(expected or []), key=method_sort_key)
    missing = [f"{m} {shot}-shot" for m in methods for shot in shots if (m, shot) not in by_key]
    head = ["method"]
    for shot in shots:
        head += [f"{shot}-shot", f"vs {REFERENCE}", "train / eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        row = [method]
        for shot in shots:
            run, ref = by_key.get((method, shot)), by_key.get((REFERENCE, shot))
            row += [_cell(run), _paired(run, ref), _seconds(run)] if run else ["not run", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    configs = [json.loads((Path(d) / "config.json").read_text()) for d in df["run_dir"]]
    commits = sorted({(c.get("git_commit") or "unknown")[:10] for c in configs})
    devices = sorted(set(df["device_name"])) if "device_name" in df else []
    precisions = sorted(set(df["precision"])) if "precision" in df else []
    lines += ["", f"5-way, 15 queries, 600 val-split episodes, training seed 0, `quick` presets "
                  f"(`benchmarks/quick_real.toml`); bold: the paired 95% CI excludes 0; times are "
                  f"wall seconds, pre-training included where a run did it (a backbone read from the cache "
                  f"counts 0; see below). Generated {max(df['created'])[:10]} from commit(s) "
                  f"{', '.join(commits)} on {', '.join(devices)}, precision {', '.join(precisions)}."]
    shared = shared_pretraining(df)
    if shared:
        lines += ["", f"Pre-trained once by the sweep and read from the cache, so outside the times "
                      f"above: {'; '.join(shared)}."]
    if missing:
        lines += ["", f"Not run in this sweep (out of this release's CPU time): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def replace_block(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} block to replace")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="the sweep's output folder")
    p.add_argument("--readme", type=Path, help="replace the quick-real block of this file")
    args = p.parse_args(argv)
    grid = sweep_grid()
    text = table(args.runs, expected=list(grid["method"]), shots=list(grid["shot"]))
    if args.readme:
        replace_block(args.readme, text)
        print(f"wrote the table into {args.readme}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
