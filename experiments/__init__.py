"""The scripts that reproduce the AllNC paper and the project's results tables (docs/RESULTS.md,
docs/ALLNC.md), and the full-size runs on a lent GPU machine; run from the repository root as
``python -m experiments.NAME`` (each module's docstring gives its command lines).

- ``reproduce_paper``: the paper's Figs. 2-5b, results.md and the CIFAR-10-LT results CSV, built from
  ``paper_runs`` (which runs), ``paper_analysis`` (nctools track / compare, the figures),
  ``paper_tables`` (results.md, the CSV) and ``paper_figures`` (the figures nctools does not draw);
- ``cifar10_lt_summary``: the tables and pass criteria of the first study (docs/results/v1) from that CSV;
- ``evidence``: the evidence study's pre-registered claims, each a paired difference over seeds with its
  95 % interval (``paired_stats``) and verdict, and their figure (``evidence_figure``);
- ``evidence_curves``: the evidence study's curves over epochs (NC1, cos-Std, self-duality; training and
  test features), mean and range over seeds, from the tracks the results CSV keeps;
- ``evidence_icpa``: the paper's Fig. 2 for the evidence study (ICPA grids, training and test features) from
  the committed final dumps;
- ``regime_search``: the weight decay at which balanced CE collapses, chosen on a validation split;
- ``gbbn_heads``: which GBBN head should classify, on a validation split and the test set;
- ``ufm_table``: the unconstrained-features table of docs/ALLNC.md;
- ``make_demo_dump``: the feature dump that ``nctools demo`` ships;
- ``gpu_runs``: the training runs of tools/device_check.sh, under a deadline;
- ``launcher``: what reproduce_paper, ufm_table and gpu_runs share: allnc-train runs in parallel,
  resumably, each one's outcome.

Not installed with the packages: ``experiments`` imports ``nctools`` and ``allnc_train``, never the reverse.
"""
