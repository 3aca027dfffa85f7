"""fsbench: a plugin-based benchmarking suite for few-shot image classification."""

__version__ = "0.1.0"

from fsbench.hookspecs import hookimpl  # noqa: E402  (the marker plugins decorate hooks with)

__all__ = ["hookimpl", "__version__"]
