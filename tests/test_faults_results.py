"""Fault injection, results: edited, malformed and oversized run directories.

Every reader of results (``report``, ``compare``, a sweep deciding what is done) goes through
:func:`fsbench.results.load_run`. Each test damages a run the way an attacker or an unlucky
user would and checks the one-line error (exit 2) that names the file.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from fsbench.atomic import atomic_write_json, atomic_write_jsonl
from fsbench.cli import main
from fsbench.results import ResultsError, load_run, load_runs
from fsbench.stats import LEGACY_CI_FORMULA, ci95_for_formula
from fsbench.strictjson import JSONError, loads

try:
    from runfactory import make_run
except ImportError:  # pragma: no cover
    from tests.runfactory import make_run

ACCS = [0.6, 0.8, 0.7, 0.5, 0.9, 0.6]


def _edit(path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _one_line_error(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fsbench: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_tampered_accuracy_fails_report_and_compare(tmp_path, capsys):
    base = make_run(tmp_path / "base", "mtl", ACCS)
    new = make_run(tmp_path / "new", "mtl", ACCS)
    _edit(new / "summary.json", accuracy=95.0)
    _one_line_error(capsys, ["report", str(new)], "summary.json", "accuracy 95", "episodes.jsonl")
    _one_line_error(capsys, ["compare", str(base), str(new)], str(new / "summary.json"))


def test_episodes_zeroed_under_an_unchanged_summary_fail(tmp_path, capsys):
    run = make_run(tmp_path, "mtl", ACCS)
    atomic_write_jsonl(run / "episodes.jsonl", [{"index": i, "accuracy": 0.0} for i in range(6)])
    _one_line_error(capsys, ["report", str(tmp_path)], "does not match")


def test_a_tampered_ci_fails_and_the_legacy_formula_is_honoured(tmp_path):
    run = make_run(tmp_path / "a", "mtl", ACCS)
    _edit(run / "summary.json", ci95=0.01)
    with pytest.raises(ResultsError, match="ci95 0.01 does not match"):
        load_run(run)
    legacy = make_run(tmp_path / "b", "mtl", ACCS, ci_formula=LEGACY_CI_FORMULA,
                      ci95=ci95_for_formula([a * 100 for a in ACCS], LEGACY_CI_FORMULA))
    assert load_run(legacy)["ci95"] > 0
    _edit(legacy / "summary.json", ci_formula=None)  # older runs: no field means legacy
    assert load_run(legacy)["ci_formula"] == ""
    _edit(legacy / "summary.json", ci_formula="2*std")
    with pytest.raises(ResultsError, match="unknown ci_formula '2\\*std'"):
        load_run(legacy)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("accuracy", 101.0, "'accuracy' must be in \\[0, 100\\]"),
    ("accuracy", -1, "'accuracy' must be in"),
    ("ci95", -0.5, "'ci95' must be in \\[0, inf\\]"),
    ("episodes", 1, "'episodes' must be in \\[2, 1e\\+06\\]"),
    ("shot", 0, "'shot' must be in"),
    ("method", "m" * 5000, "'method' is 5,000 characters long"),
])
def test_values_out_of_range_are_named(tmp_path, field, value, message):
    run = make_run(tmp_path, "mtl", ACCS)
    _edit(run / "summary.json", **{field: value})
    with pytest.raises(ResultsError, match=message):
        load_run(run)


def test_a_billion_episodes_fails_fast_without_allocating(tmp_path, capsys):
    run = make_run(tmp_path, "mtl", ACCS)
    _edit(run / "summary.json", episodes=1_000_000_000)
    began = time.perf_counter()
    _one_line_error(capsys, ["report", str(run)], "'episodes' must be in")
    assert time.perf_counter() - began < 2.0  # was 39 s and 7.9 GB


def test_oversized_files_are_refused_before_reading(tmp_path):
    run = make_run(tmp_path / "a", "mtl", ACCS)
    (run / "summary.json").write_text(json.dumps(json.loads((run / "summary.json").read_text()))
                                      + " " * (2 << 20))
    with pytest.raises(ResultsError, match="bytes, more than the 1,048,576"):
        load_run(run)
    run = make_run(tmp_path / "b", "mtl", ACCS)
    with open(run / "episodes.jsonl", "a") as fh:
        fh.write(" " * 10_000 + "\n")
    with pytest.raises(ResultsError, match="episodes.jsonl: 10,.* bytes, more than"):
        load_run(run)


HOSTILE_JSON = {
    "nan": ('{"a": NaN}', "NaN is not a JSON number"),
    "infinity": ('{"a": -Infinity}', "-Infinity is not a JSON number"),
    "overflow": ('{"a": 1e999}', "number 1e999 is out of range"),
    "huge_int": ('{"a": ' + "9" * 5000 + "}", "integer 99999999999999999999... is out of range"),
    "big_int": ('{"a": 18446744073709551616}', "is out of range"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "deep_but_parseable": ("[" * 500 + "]" * 500, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
@pytest.mark.parametrize("file", ["summary.json", "episodes.jsonl", "history.jsonl"])
def test_hostile_json_is_a_one_line_error(tmp_path, capsys, case, file):
    text, message = HOSTILE_JSON[case]
    run = make_run(tmp_path, "mtl", ACCS, history=[])
    if file == "episodes.jsonl" and len(text) > 700:  # within the file's size bound (6 episodes)
        text = text[:300] + text[-300:] if case.startswith("deep") else '{"a": ' + "9" * 600 + "}"
    (run / file).write_text(text + "\n")
    _one_line_error(capsys, ["report", str(run)], file, message)


def test_strict_loads_and_the_writer_agree():
    with pytest.raises(JSONError, match="where: invalid JSON"):
        loads("{", "where")
    assert loads('{"a": [1, 2.5, "x", null, true]}', "w") == {"a": [1, 2.5, "x", None, True]}


def test_json_is_written_without_nan(tmp_path):
    atomic_write_jsonl(tmp_path / "h.jsonl", [{"val_ci95": math.nan, "x": [math.inf, 1.0]}])
    assert (tmp_path / "h.jsonl").read_text() == '{"val_ci95": null, "x": [null, 1.0]}\n'
    atomic_write_json(tmp_path / "s.json", {"a": -math.inf})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None}


def test_history_with_one_val_episode_reads_back(tmp_path):
    run = make_run(tmp_path, "mtl", ACCS)
    atomic_write_jsonl(run / "history.jsonl", [  # what the engine gives for 1 val episode
        {"phase": "meta_train", "step": 1, "val_accuracy": 60.0, "val_ci95": math.nan}])
    assert load_run(run)["history"][0]["val_ci95"] is None
    atomic_write_jsonl(run / "history.jsonl", [{"phase": "x", "step": 1, "val_accuracy": 1e9}])
    with pytest.raises(ResultsError, match="val_accuracy must be a number in \\[0, 100\\]"):
        load_run(run)


def test_a_report_of_a_folder_skips_runs_set_aside_as_damaged(tmp_path):
    make_run(tmp_path, "mtl", ACCS, run_id="good")
    damaged = make_run(tmp_path, "mtl", ACCS, run_id="good.damaged-20240101T000000")
    _edit(damaged / "summary.json", accuracy=95.0)
    assert list(load_runs(tmp_path)["run_id"]) == ["good"]
    with pytest.raises(ResultsError, match="does not match"):  # named explicitly: read
        load_runs(damaged)


@pytest.mark.parametrize("sidecar", ['{"format_version": NaN}', "[" * 100_000,
                                     '{"format_version": ' + "1" * 5000 + "}"])
def test_a_hostile_data_cache_sidecar_means_rebuild(tmp_path, sidecar):
    from datagen import write_miniimagenet_folders

    from fsbench.data import load_dataset

    root = tmp_path / "mini"
    write_miniimagenet_folders(root, classes_per_split={"train": 3, "val": 3}, per_class=4, size=84)
    first = load_dataset("miniimagenet", root, tmp_path / "cache", False)
    (meta,) = (tmp_path / "cache").glob("*/meta.json")
    meta.write_text(sidecar)
    again = load_dataset("miniimagenet", root, tmp_path / "cache", False)  # prepared again, no traceback
    assert again.split("train").images.equal(first.split("train").images)
    assert json.loads(meta.read_text())["format_version"] == 2


HOSTILE_SETTINGS = {
    "grid.toml": [("episodes = " + "9" * 40, "integer 99999999999999999999... is out of range"),
                  ("[hparams]\nlr = inf", "number inf is out of range"),
                  ("[hparams]\nlr = nan", "number nan is out of range"),
                  ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply")],
    "config.json": [('{"hparams": {"lr": NaN}}', "NaN is not a JSON number"),
                    ('{"hparams": {"lr": 1e999}}', "number 1e999 is out of range"),
                    ("[" * 100_000 + "]" * 100_000, "nested too deeply")],
    "config.toml": [("[hparams]\nlr = -inf", "number -inf is out of range"),
                    ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply")],
}


@pytest.mark.parametrize(("name", "case"), [(n, i) for n, cases in HOSTILE_SETTINGS.items()
                                            for i in range(len(cases))])
def test_hostile_grid_and_config_files_are_one_line_errors(tmp_path, capsys, name, case):
    text, message = HOSTILE_SETTINGS[name][case]
    path = tmp_path / name
    where = ["--output", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    if name == "grid.toml":
        path.write_text(f'method = "protonet"\npreset = "smoke"\n{text}\n')
        argv = ["sweep", str(path), *where, "--dry-run"]
    else:
        path.write_text(text + "\n")
        argv = ["run", "--method", "protonet", "--preset", "smoke", "--config", str(path), *where]
    _one_line_error(capsys, argv, str(path), message)
    assert not (tmp_path / "o").exists()
