"""Hook specifications for fsbench plugins (pluggy).

A plugin is a module (or object) registered through the ``fsbench`` entry-point group::

    [project.entry-points.fsbench]
    mymethod = "my_package.fsbench_plugin"

that implements :func:`fsbench_methods` with ``@fsbench.hookimpl``. fsbench's own methods
(``plugins/``) are registered exactly this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from fsbench.config import MethodPreset
    from fsbench.method import Method

PROJECT = "fsbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class MethodRecord:
    """A method a plugin offers.

    ``presets`` maps each preset name (``paper``, ``quick``, ``smoke``) to its defaults.
    ``hard_tasks`` turns the hard-task meta-batch on by default (``mtl_ht``, ``maml_ht``).
    ``plugin`` is filled in by the plugin manager: the entry point that registered it.
    """

    name: str
    cls: type[Method]
    description: str
    presets: dict[str, MethodPreset]
    hard_tasks: bool = False
    plugin: str = field(default="", compare=False)
    origin: str = field(default="", compare=False)  # the distribution that provides it

    @property
    def episodic(self) -> bool:
        return any(p.episodic is not None for p in self.presets.values())

    @property
    def needs_pretrain(self) -> bool:
        return any(p.pretrain is not None for p in self.presets.values())


@hookspec
def fsbench_methods() -> list[MethodRecord]:
    """Return the methods this plugin provides (one record per method name)."""
    raise NotImplementedError


@dataclass(frozen=True)
class ExecutorRecord:
    """A sweep executor a plugin offers (``fsbench sweep --executor NAME``).

    ``options`` is the frozen dataclass of the executor's own ``fsbench sweep`` options, each
    field made with :func:`fsbench.options.option` (its flag is ``--`` and the field's name with
    dashes, unless ``flag=`` says otherwise): ``fsbench sweep --help`` lists them under the
    executor's name, and the sweep parses and checks them. ``factory(common, options)`` builds
    the executor from the options every executor may read
    (:class:`fsbench.sweep.executor.ExecutorOptions`) and an instance of ``options`` (None when
    the executor declares none); the object it returns implements
    :class:`fsbench.sweep.executor.Executor`. ``requires`` is the install command of an optional
    dependency, shown when it is missing (e.g. ``pip install "fsbench[ray]"``).
    """

    name: str
    factory: Callable[..., Any]
    description: str
    requires: str = ""
    options: type | None = None
    plugin: str = field(default="", compare=False)
    origin: str = field(default="", compare=False)


@hookspec
def fsbench_executors() -> list[ExecutorRecord]:
    """Return the sweep executors this plugin provides (one record per executor name)."""
    raise NotImplementedError
