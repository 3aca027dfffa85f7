"""Exceptions whose message is shown to the user as one line (exit code 2)."""

from __future__ import annotations


class FsbenchError(ValueError):
    """Bad input or configuration. The message names the value at fault and what is valid."""


class ConfigError(FsbenchError):
    """An option, preset or config-file value is invalid."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; the run stops instead of training on NaNs."""


class PluginError(RuntimeError):
    """A plugin failed (during import, registration or training); the message names it."""
