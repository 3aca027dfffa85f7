"""fsbench's bundled methods, one package per method family (import name ``fsbench_plugins``).

Each package registers through the ``fsbench`` entry-point group, the same path a third-party
method package takes (see pyproject.toml and :mod:`fsbench.plugins`).
"""
