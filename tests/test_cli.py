"""The command line: one-line errors with exit code 2, and a smoke run end to end."""

import json

import pytest

from fsbench.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("fsbench: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_method(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "nope", "--output", str(tmp_path))
    assert_one_line_error(code, err, "unknown method 'nope'", "protonet")


def test_missing_data_root(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--dataset", "miniimagenet",
                           "--data-root", str(tmp_path / "absent"), "--output", str(tmp_path / "o"))
    assert_one_line_error(code, err, "absent", "does not exist")


def test_data_root_required_for_real_data(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--dataset", "fc100", "--output", str(tmp_path))
    assert_one_line_error(code, err, "--data-root is required")


def test_wrong_layout(capsys, tmp_path):
    (tmp_path / "data" / "junk").mkdir(parents=True)
    (tmp_path / "data" / "junk" / "readme.txt").write_text("not images")
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--dataset", "miniimagenet",
                           "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "o"),
                           "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "layout")


def test_shot_plus_query_too_large(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--shot", "100",
                           "--query", "50", "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "shot + query = 100 + 50 = 150")
    assert not list(tmp_path.glob("*/summary.json"))


def test_way_larger_than_classes(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--way", "30",
                           "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "--way 30 is larger than the 20 classes")


def test_unknown_backbone(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--backbone", "nonet",
                           "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "nonet")


def test_config_file_with_wrong_type(capsys, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[episodic]\niterations = "many"\n')
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--config", str(cfg),
                           "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "episodic.iterations must be int", "'many'")


def test_unknown_setting(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--set", "hparams.lrr=0.1",
                           "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "unknown setting hparams.lrr", "lr")


def test_smoke_run_writes_run_directory(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", "--method", "protonet", "--preset", "smoke", "--episodes", "30",
                           "--eval-split", "val", "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
                           "--quiet")
    assert code == 0
    assert " ± " in out  # the final table shows accuracy ± CI
    (run_dir,) = [p.parent for p in tmp_path.glob("*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("method", "dataset", "backbone", "way", "shot", "query", "episodes", "seed", "preset",
                "eval_split", "accuracy", "ci95", "ci_formula", "train_seconds", "eval_seconds"):
        assert key in summary
    assert summary["eval_split"] == "val" and summary["episodes"] == 30
    # Speed figures of the meta-training (all tasks of all meta-batches), on the CPU in fp32.
    from fsbench_plugins.protonet import PRESETS
    episodic = PRESETS["smoke"].episodic
    assert summary["meta_train_episodes"] == episodic.iterations * episodic.meta_batch
    # --precision auto (the default): bf16 on a CPU with native bf16, fp32 elsewhere.
    from fsbench.precision import resolve_precision

    expected = resolve_precision("auto", "cpu").label
    assert summary["meta_train_episodes_per_s"] > 0 and summary["precision"] == expected
    assert "episodes/s" in out and expected in out
    rows = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(30))
    config = json.loads((run_dir / "config.json").read_text())
    assert "torch" in config["versions"] and config["device"] == "cpu"
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "checkpoint.pt").exists()


def test_methods_lists_origin(capsys):
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0 and "protonet" in out and "fsbench" in out


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "fsbench" in capsys.readouterr().out
