"""Reports from run directories, one job per module.

* :mod:`fsbench.results` (outside this package) reads and validates run directories;
* :mod:`~fsbench.report.aggregate`: statistics over runs (seed aggregation, paired differences);
* :mod:`~fsbench.report.labels`: row and column labels and the paper's orders;
* :mod:`~fsbench.report.tables`: the accuracy, ablation and paired tables as :class:`TableView`;
* :mod:`~fsbench.report.render`: a view as markdown, CSV, LaTeX or HTML (pandas) or rich;
* :mod:`~fsbench.report.compare`: the regression gate (``fsbench compare``);
* :mod:`~fsbench.report.plots`: validation curves and accuracy-vs-shot figures.

The ``report`` and ``compare`` commands themselves live in :mod:`fsbench.cli`.
"""
