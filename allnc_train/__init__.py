"""allnc_train: long-tailed training with AllNC and its baselines, writing nctools feature dumps.

Modules, one job each: ``config`` (the config tree and its checks), ``data`` (CIFAR-LT subsets,
split files, datasets), ``samplers`` (instance / class-balanced / sqrt / reversed), ``models``
(ResNet-32, ResNet-50, ResNeXt-50, unconstrained features, the NCModel wrapper), ``losses``
(CE, logit adjustment, HyCon, P2P), ``schedules`` (learning rate, GBBN's eta), ``objective`` (one
step's loss per method), ``evaluate`` (accuracy, dumps), ``checkpoint``, ``train`` (the loop),
``cli`` (``allnc-train``), ``make_configs`` (the bundled YAML files), ``paper_figures`` (the AllNC
paper's own figures), ``nctools_plugin`` (how ``nctools analyze`` reads this trainer's checkpoints and
ResNet-32 state dicts, registered as entry points).

The dependency runs one way: this package builds on ``nctools`` (dumps, atomic writes, the simplex
ETF, devices, class groups); ``nctools`` never imports it.

Nothing heavy is imported here, so ``allnc-train --help`` stays instant.
"""
__version__ = "0.1.0"
