"""Cross-domain evaluation: train on one dataset, draw the test episodes from another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsbench.cli import main

try:
    from test_data_folder import write_classes
except ImportError:  # tests/ imported as a package
    from tests.test_data_folder import write_classes


@pytest.fixture
def other_domain(tmp_path: Path) -> Path:
    """A folder dataset with only a test split: 5 classes x 4 images."""
    write_classes(tmp_path / "birds" / "test", {f"bird{i}": 4 for i in range(5)})
    return tmp_path / "birds"


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", "--method", "protonet", "--preset", "smoke", "--episodes", "3",
                 "--query", "2", "--output", str(tmp_path / "out"), "--cache-dir",
                 str(tmp_path / "cache"), "--quiet", *extra])


def test_train_synthetic_test_folder(tmp_path: Path, other_domain: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "folder", "--source", str(other_domain), "--image-size", "32",
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert _run(tmp_path, "--eval-dataset", "folder", "--eval-data-root", str(other_domain)) == 0
    (summary_path,) = (tmp_path / "out").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary_path.parent.name.startswith("protonet_synthetic-to-folder_conv4_5w1s_smoke_test_")
    assert (summary["dataset"], summary["train_dataset"], summary["eval_dataset"]) == (
        "synthetic->folder", "synthetic", "folder")
    config = json.loads((summary_path.parent / "config.json").read_text())
    assert config["run"]["eval_dataset"] == "folder"
    assert any(n.startswith("folder: image folders per split") for n in config["dataset_notes"])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 0
    assert "synthetic->folder 1-shot" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "out"), "--format", "markdown"]) == 0
    assert "synthetic-&gt;folder 1-shot" in capsys.readouterr().out  # markdown escapes '>'


def test_image_sizes_must_match(tmp_path: Path, other_domain: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--eval-dataset", "folder", "--eval-data-root", str(other_domain)) == 2
    err = capsys.readouterr().err
    assert "fsbench: error: --eval-dataset folder has 84px images, --dataset synthetic 32px" in err
    assert not list((tmp_path / "out").glob("*/summary.json"))


@pytest.mark.parametrize("extra,message", [
    (("--eval-data-root", "x"), "--eval-data-root needs --eval-dataset"),
    (("--eval-dataset", "cub"), "--eval-data-root is required for --eval-dataset 'cub'"),
])
def test_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message) -> None:
    assert _run(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err
