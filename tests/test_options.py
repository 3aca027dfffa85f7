"""Every run option is declared once, on RunConfig, and everything else is derived from it.

The flags of ``fsbench run`` / ``fsbench pretrain``, the sweep's axes and ``RunConfig.validate``
come from each field's :func:`fsbench.options.option`; these tests list RunConfig's fields and
find each where a user looks for it, and show that a new field needs no other edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from fsbench.cli import build_parser, main, run_configs
from fsbench.config import RunConfig
from fsbench.errors import ConfigError
from fsbench.options import EACH, add_arguments, check_fields, option, options_of, parse_int
from fsbench.sweep.grid import AXES, SINGLE_SETTINGS

#: Fields whose flags are not ``--`` + the name with dashes, and why.
FLAGS = {"overrides": ("--config", "--set")}  # a file of overrides and single settings
#: Fields that are not a list in a sweep, and why.
NOT_AXES = {
    "output": "one output root for the whole sweep (a grid-file setting and --output)",
    "cache_dir": "one cache for the whole sweep (a grid-file setting and --cache-dir)",
    "resume": "a sweep always takes up what is unfinished and skips what is done",
}


def _flags(command: str) -> set[str]:
    """The flags ``fsbench COMMAND --help`` shows."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(re.findall(r"--[a-z][a-z-]*", sub.choices[command].format_help()))


def test_every_run_option_is_declared_and_found_in_run_help_and_the_sweep():
    run_help, pretrain_help, sweep_help = _flags("run"), _flags("pretrain"), _flags("sweep")
    axes = {a.field for a in AXES}
    declared = {d.name for d in options_of(RunConfig)}
    for f in dataclasses.fields(RunConfig):
        assert f.name in declared, f"RunConfig.{f.name} is not declared with fsbench.options.option"
        for flag in FLAGS.get(f.name, ("--" + f.name.replace("_", "-"),)):
            assert flag in run_help, f"{flag} ({f.name}) missing from `fsbench run --help`"
            assert flag in pretrain_help, f"{flag} ({f.name}) missing from `fsbench pretrain --help`"
        if f.name in NOT_AXES:
            assert f.name not in axes
            continue
        key = "config" if f.name == "overrides" else f.name
        assert key in axes, f"{f.name} is not a sweep axis (list it in NOT_AXES with the reason)"
        assert f"--{key.replace('_', '-')}" in sweep_help
    assert {"output", "cache_dir"} == set(SINGLE_SETTINGS)


def test_the_sweep_varies_the_axes_in_field_order():
    names = [d.name if d.name != "overrides" else "config" for d in options_of(RunConfig)]
    assert [a.field for a in AXES] == [n for n in names if n in {a.field for a in AXES}]
    assert [a.field for a in AXES][:2] == ["dataset", "data_root"]
    assert [a.field for a in AXES][-3:] == ["seed", "episode_seed", "precision"]


def test_a_new_option_is_one_declaration():
    """A field declared once gets its flag, default, parser and check, with no other edit."""
    extended = dataclasses.make_dataclass(
        "Extended", [("knob", int, option(3, parse=parse_int, least=1, help="a new knob"))],
        bases=(RunConfig,), frozen=True, kw_only=True)
    parser = argparse.ArgumentParser()
    add_arguments(parser, extended)
    args = parser.parse_args(["--method", "protonet"])
    assert args.knob == 3 and "--knob" in parser.format_help()
    assert parser.parse_args(["--knob", "7"]).knob == 7
    with pytest.raises(ConfigError, match="--knob must be at least 1, got 0"):
        check_fields(extended(method="protonet", knob=0))


@pytest.mark.parametrize(("flags", "message"), [
    (("--way", "0"), "--way must be at least 1, got 0"),
    (("--shot", "-2"), "--shot must be at least 1, got -2"),
    (("--episodes", "1"), "--episodes must be at least 2 (a confidence interval needs two), got 1"),
    (("--ht-every", "0"), "--ht-every must be at least 1, got 0"),
    (("--episode-seed", "-1"), "--episode-seed must be at least 0, got -1"),
    (("--seed", "-1"), "--seed must be at least 0, got -1"),
])
def test_a_value_out_of_range_is_a_one_line_error(tmp_path, capsys, flags, message):
    argv = ["run", "--method", "protonet", "--preset", "smoke", "--output", str(tmp_path / "o"),
            *flags]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"fsbench: error: {message}", err
    assert not (tmp_path / "o").exists()


def test_a_value_that_does_not_parse_is_a_usage_error(capsys):
    for flags, message in ((("--device", "gpu"), "expected auto, cpu, cuda or cuda:N, got 'gpu'"),
                           (("--way", "five"), "expected an integer, got 'five'")):
        with pytest.raises(SystemExit) as info:
            main(["run", "--method", "protonet", *flags])
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_validate_checks_each_declared_choice():
    with pytest.raises(ConfigError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        RunConfig(method="protonet", precision="fp16").validate()
    with pytest.raises(ConfigError, match="--ht-mode must be one of extra, replace"):
        RunConfig(method="protonet", ht_mode="both").validate()
    with pytest.raises(ConfigError, match="--dataset must be one of synthetic"):
        RunConfig(method="protonet", dataset="imagenet").validate()
    RunConfig(method="protonet", ht_mode="replace", device="cuda:1").validate()


def test_a_sweep_axis_takes_the_options_choices(tmp_path, capsys):
    code = main(["sweep", "--method", "mtl_ht", "--ht-mode", "extra,both", "--dry-run",
                 "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--ht-mode value 'both' is invalid (must be one of extra, replace" in err


def test_run_flags_make_the_runs_one_per_seed(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[episodic]\niterations = 3\n")
    args = build_parser(executor_flags=False).parse_args(
        ["run", "--method", "maml", "--seed", "2,0", "--seed", "2", "--shot", "5", "--config",
         str(config), "--set", "episodic.meta_batch=1"])
    runs = run_configs(args)
    assert [r.seed for r in runs] == [2, 0]
    assert all(r.shot == 5 and r.method == "maml" for r in runs)
    assert runs[0].overrides == {"episodic": {"iterations": 3, "meta_batch": 1}}
    defaults = run_configs(build_parser(executor_flags=False).parse_args(["run", "--method", "x"]))
    assert defaults == [RunConfig(method="x")]  # every flag's default is the field's
    assert [d.name for d in options_of(RunConfig) if d.option.kind == EACH] == ["seed"]


def test_a_suite_refuses_the_options_it_pins(tmp_path, capsys):
    code = main(["run", "--suite", "ci", "--precision", "bf16", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--suite ci pins --precision" in err and "\n" not in err
    assert not Path(tmp_path / "o").exists()


def test_where_a_run_goes_and_what_computes_it_leave_its_name(tmp_path):
    from fsbench.runner import Run

    base = RunConfig(method="protonet", preset="smoke", device="cpu", output=tmp_path)
    name = Run(base, show_progress=False).name
    for change in ({"output": tmp_path / "x"}, {"cache_dir": tmp_path / "c"}, {"resume": True},
                   {"device": "auto"}):
        assert Run(dataclasses.replace(base, **change), show_progress=False).name == name, change
    for change in ({"way": 4}, {"episodes": 20}, {"ht_mode": "replace"}):
        assert Run(dataclasses.replace(base, **change), show_progress=False).name != name, change
