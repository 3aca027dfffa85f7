"""The plugin manager: loads method plugins from the ``fsbench`` entry-point group.

First-party methods (``plugins/``) are declared in fsbench's own ``pyproject.toml`` under that
group, so they take the same path as any third-party package. A plugin that fails to import or
to answer the hook is reported and skipped; two plugins offering the same method name are an
error naming both. ``FSBENCH_DISABLE_PLUGINS=name1,name2`` skips entry points by name.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import pluggy

from fsbench import hookspecs
from fsbench.errors import ConfigError, PluginError
from fsbench.hookspecs import ExecutorRecord, MethodRecord

ENTRY_POINT_GROUP = hookspecs.PROJECT
DISABLE_ENV = "FSBENCH_DISABLE_PLUGINS"


@dataclass
class Registry:
    methods: dict[str, MethodRecord] = field(default_factory=dict)
    executors: dict[str, ExecutorRecord] = field(default_factory=dict)  # sweep executors
    problems: list[str] = field(default_factory=list)  # plugins reported and skipped

    def get(self, name: str) -> MethodRecord:
        try:
            return self.methods[name]
        except KeyError:
            known = ", ".join(sorted(self.methods)) or "none (is fsbench installed? pip install -e .)"
            raise ConfigError(f"unknown method {name!r}; available: {known}") from None


def disabled_plugins() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


def load_registry(extra: dict[str, object] | None = None, entry_points: bool = True) -> Registry:
    """Load every plugin; ``extra`` maps plugin names to already-imported plugin objects."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    origins: dict[str, str] = {}
    skip = disabled_plugins()
    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in skip:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not take fsbench down
                registry.problems.append(
                    f"plugin {ep.name!r} ({ep.value}, from {dist}) failed to load and was skipped: "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            origins[ep.name] = dist
    for name, obj in (extra or {}).items():
        if name not in skip:
            pm.register(obj, name=name)
            origins[name] = "registered in-process"
    pm.check_pending()
    registry.methods = _collect(pm.hook.fsbench_methods, MethodRecord, "method", registry, origins)
    registry.executors = _collect(pm.hook.fsbench_executors, ExecutorRecord, "executor", registry,
                                  origins)
    return registry


def _collect(hook: Any, record_type: type, kind: str, registry: Registry,
             origins: dict[str, str]) -> dict[str, Any]:
    """The records every plugin's ``hook`` returns, by name, each tagged with its plugin and
    origin. A plugin that raises or returns something else is reported and skipped; a name two
    plugins provide is an error that names both."""
    owner: dict[str, str] = {}
    out: dict[str, Any] = {}
    for impl in hook.get_hookimpls():
        plugin = impl.plugin_name
        try:
            records = impl.function()
        except Exception as exc:
            registry.problems.append(
                f"plugin {plugin!r} raised while listing its {kind}s and was skipped: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        for rec in records or []:
            if not isinstance(rec, record_type):
                registry.problems.append(
                    f"plugin {plugin!r} returned {type(rec).__name__}, not a {record_type.__name__}; "
                    "skipped"
                )
                continue
            if rec.name in owner:
                raise PluginError(
                    f"{kind} {rec.name!r} is provided by two plugins: {owner[rec.name]!r} and "
                    f"{plugin!r}; disable one with {DISABLE_ENV}"
                )
            owner[rec.name] = plugin
            out[rec.name] = replace(rec, plugin=plugin, origin=origins.get(plugin, "?"))
    return out


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return load_registry()


def describe_failure(plugin: str, exc: BaseException) -> str:
    """One line naming the plugin and where its error came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"method plugin {plugin!r} failed: {type(exc).__name__}: {exc}{where}"
