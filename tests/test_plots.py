"""Plots are written as non-empty PNG and SVG files, atomically, without a display."""

from __future__ import annotations

import pytest

from fsbench.report.plots import plot_accuracy_vs_shot, plot_val_curves
from fsbench.results import load_runs

try:
    from runfactory import curve, make_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import curve, make_run


@pytest.fixture
def df(tmp_path):
    root = tmp_path / "runs"
    for shot, base in ((1, 0.5), (5, 0.65)):
        for method, delta in (("protonet", 0.0), ("mtl", 0.1)):
            history = curve([0, 10, 20], [40.0 + delta * 100, 45.0, 50.0]) + curve(
                [0, 100], [30.0, 35.0], phase="pretrain"
            )
            make_run(root, method, [base + delta, base + delta - 0.1], shot=shot, history=history)
    make_run(root, "mtl", [0.7, 0.6], shot=1, seed=1, history=curve([0, 10], [41.0, 47.0]))
    make_run(root, "mtl", [0.6, 0.5], shot=1, dataset="fc100", eval_split="val")  # no history
    return load_runs(root)


def check(paths, out_dir, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.svg"]
    png, svg = paths
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 1000
    assert b"<svg" in svg.read_bytes()[:2000]
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]


def test_val_curves(df, tmp_path):
    out = tmp_path / "plots" / "nested"
    check(plot_val_curves(df, out), out, "val_curves")


def test_accuracy_vs_shot(df, tmp_path):
    out = tmp_path / "plots"
    check(plot_accuracy_vs_shot(df, out), out, "accuracy_vs_shot")


def test_no_history_means_no_val_plot(tmp_path):
    make_run(tmp_path / "r", "protonet", [0.5, 0.6])
    assert plot_val_curves(load_runs(tmp_path / "r"), tmp_path / "plots") == []


def test_overwrite_is_atomic_and_repeatable(df, tmp_path):
    first = plot_accuracy_vs_shot(df, tmp_path)
    svg_before = first[1].read_bytes()
    second = plot_accuracy_vs_shot(df, tmp_path)
    assert first == second
    assert second[1].read_bytes() == svg_before  # no timestamp in the SVG
