"""Packaging: every package folder is installed, under the import names pyproject.toml maps."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setup["packages"], setup["package-dir"]


def test_every_package_folder_is_listed_under_its_import_name():
    packages, package_dir = _declared()
    found = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == set(packages), f"pyproject packages differ: {sorted(found ^ set(packages))}"


def test_bundled_methods_import_as_fsbench_plugins_not_plugins():
    groups = entry_points(group="fsbench")
    targets = {ep.value for ep in groups}
    assert targets, "no fsbench entry points installed"
    assert all(t.startswith("fsbench_plugins.") for t in targets), targets
    import fsbench_plugins.mtl as mtl

    assert Path(mtl.__file__).resolve().parent == ROOT / "plugins" / "mtl"
