"""The plugin host: entry points, duplicates, broken plugins, an external plugin run end to end."""

import sys
import textwrap
from pathlib import Path

import pytest

from fsbench import plugins
from fsbench.errors import PluginError

FIRST_PARTY = {"protonet", "finetune", "scratch", "mtl", "mtl_ht", "maml", "maml_ht"}


def write_dist(site: Path, dist: str, module: str, body: str, ep_name: str | None = None) -> None:
    """An installed distribution (dist-info + module) declaring an `fsbench` entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[fsbench]\n{ep_name or module} = {module}\n")


EXTERNAL = """
    from dataclasses import dataclass
    import torch
    from fsbench import hookimpl
    from fsbench.config import MethodPreset
    from fsbench.hookspecs import MethodRecord
    from fsbench.method import Method

    @dataclass(frozen=True)
    class Hp:
        pass

    class PixelMean(Method):
        '''Nearest class mean on raw pixels: a method with no training.'''
        frozen_at_test = True
        def embed(self, images):
            return images.flatten(1)
        def classify(self, support, support_y, query, way):
            from fsbench.learners.prototypes import nearest_centroid_logits
            return nearest_centroid_logits(support, support_y, query, way)

    PRESETS = {p: MethodPreset(backbone="none", hparams=Hp()) for p in ("paper", "quick", "smoke")}

    @hookimpl
    def fsbench_methods():
        return [MethodRecord("{name}", PixelMean, "pixel-space nearest mean", PRESETS)]
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for mod in [m for m in sys.modules if m.startswith("ext_")]:
        del sys.modules[mod]


def test_first_party_methods_come_through_entry_points():
    registry = plugins.load_registry()
    assert FIRST_PARTY <= set(registry.methods)
    for name in FIRST_PARTY:
        assert registry.methods[name].origin == "fsbench"


def test_external_plugin_registers_and_runs(site, tmp_path):
    from fsbench.config import RunConfig
    from fsbench.runner import Run

    write_dist(site, "ext-pixel", "ext_pixel", EXTERNAL.replace("{name}", "pixel_mean"))
    registry = plugins.load_registry()
    rec = registry.methods["pixel_mean"]
    assert rec.origin == "ext-pixel" and rec.plugin == "ext_pixel"
    plugins.default_registry.cache_clear()
    try:
        result = Run(RunConfig(method="pixel_mean", preset="smoke", episodes=40, output=tmp_path / "out",
                               cache_dir=tmp_path / "cache"), show_progress=False).execute()
    finally:
        plugins.default_registry.cache_clear()
    assert result.summary["method"] == "pixel_mean"
    assert result.summary["accuracy"] > 20  # pixel means beat chance on the synthetic textures


def test_duplicate_method_name_names_both_plugins(site):
    write_dist(site, "ext-dup", "ext_dup", EXTERNAL.replace("{name}", "protonet"))
    with pytest.raises(PluginError, match=r"'protonet' is provided by two plugins: .*'protonet'.*'ext_dup'|'ext_dup'.*'protonet'"):
        plugins.load_registry()


def test_broken_plugin_is_reported_and_skipped(site):
    write_dist(site, "ext-broken", "ext_broken", "raise ImportError('missing dependency xyz')\n")
    registry = plugins.load_registry()
    assert FIRST_PARTY <= set(registry.methods)
    assert any("ext_broken" in p and "missing dependency xyz" in p for p in registry.problems)


def test_disable_env_skips_a_plugin(site, monkeypatch):
    write_dist(site, "ext-dup2", "ext_dup2", EXTERNAL.replace("{name}", "protonet"))
    monkeypatch.setenv(plugins.DISABLE_ENV, "ext_dup2")
    registry = plugins.load_registry()  # the duplicate is skipped, so no error
    assert registry.methods["protonet"].plugin == "protonet"


def test_unknown_method_lists_available():
    with pytest.raises(ValueError, match="unknown method 'nope'; available: .*protonet"):
        plugins.load_registry().get("nope")


def test_every_hookspec_has_a_test():
    """A new hook must come with a test: this list names the hooks exercised above."""
    from fsbench import hookspecs

    specs = {name for name in dir(hookspecs) if name.startswith("fsbench_")}
    assert specs == {"fsbench_methods", "fsbench_executors"}  # executors: tests/test_sweep.py
