"""The measurement core: pure functions and accumulators, no file I/O.

- ``validation``: input checks shared by every entry point (one sentence per problem);
- ``device``: where the statistics live (``"auto"``, ``"cpu"``, ``"cuda[:N]"``);
- ``rows``: the interface of a feature matrix whose rows are read on demand;
- ``geometry``: simplex ETF, Gram-matrix forms of NC2 / NC3 / ICPA, pair distances;
- ``sums``, ``residuals``, ``reducer``, ``statistics``: the two streaming passes and how their
  sums merge (chunks, accumulators, processes), behind the ``NeuralCollapse`` accumulator;
- ``keys``: the summary keys, named once;
- ``result``: sums -> the summary keys, per-class table and ICPA matrices;
- ``audit``: many / medium / few class groups and the minority-collapse verdict;
- ``analysis``: ``analyze()``, two passes over in-memory or on-disk features;
- ``functional``: one metric at a time.
"""
