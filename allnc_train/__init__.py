"""allnc_train: long-tailed training with AllNC and its baselines, writing nctools feature dumps.

Modules, one job each: ``config`` (the config tree and its checks), ``data`` (CIFAR-LT subsets,
split files, datasets), ``samplers`` (instance / class-balanced / sqrt / reversed), ``models``
(ResNet-32, ResNet-50, ResNeXt-50, unconstrained features, the NCModel wrapper), ``losses``
(CE, logit adjustment, HyCon, P2P), ``schedules`` (learning rate, GBBN's eta), ``objective`` (one
step's loss per method), ``evaluate`` (accuracy, dumps), ``checkpoint``, ``io`` (atomic writes),
``train`` (the loop), ``cli`` (``allnc-train``), ``make_configs`` (the bundled YAML files).

Nothing heavy is imported here, so ``allnc-train --help`` stays instant.
"""
__version__ = "0.1.0"
