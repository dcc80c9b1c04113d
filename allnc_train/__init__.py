"""allnc_train: long-tailed training with AllNC and its baselines, writing nctools feature dumps.

Rooms, one job each:

- ``methods/``: the methods table (name -> how to build the model and the run's objective, which
  components it switches on, its config checks), one module per method family, the losses;
- ``data/``: long-tailed subsets, readers, datasets, samplers, the random streams, augmentation,
  the batched pipeline and the loaders;
- ``schema`` (the config tree and its checks) and ``config`` (a config resolved with its method);
- ``models`` (ResNet-32, ResNet-50, ResNeXt-50, unconstrained features, the NCModel wrapper),
  ``schedules`` (learning rate, GBBN's eta);
- the loop: ``train`` (epochs, evaluation, dumps), ``step`` (one optimisation step), ``evaluate``
  (features, accuracy, dump files), ``checkpoint``, ``rundir`` (the run folder as a resource),
  ``distributed`` (torchrun hooks);
- ``cli`` (``allnc-train``), ``make_configs`` (the bundled YAML files), ``nctools_plugin`` (how
  ``nctools analyze`` reads this trainer's checkpoints and ResNet-32 state dicts).

The dependency runs one way: this package builds on ``nctools`` (dumps, atomic writes, the run-folder
layout, the error base class, the simplex ETF, devices, class groups); ``nctools`` never imports it.

Nothing heavy is imported here, so ``allnc-train --help`` stays instant.
"""
from nctools import __version__  # one distribution, one version (written in nctools/__init__.py)

__all__ = ["__version__"]
