"""Neural collapse epoch by epoch in a PyTorch Lightning run.

>>> from nctools.integrations.lightning import NeuralCollapseCallback   # doctest: +SKIP
>>> trainer = L.Trainer(callbacks=[NeuralCollapseCallback(train_eval_loader, out="runs/nc")])  # doctest: +SKIP

At the end of every ``every_n_epochs``-th training epoch the callback measures the model on
``dataloader`` (:class:`~nctools.integrations.recorder.EpochRecorder`), logs the main summary keys as
``nc/<key>`` through ``LightningModule.log_dict`` (so they reach every logger, and
``ModelCheckpoint(monitor="nc/nc1")`` works), and with ``out`` writes the epoch's dump for
``nctools track out``. Works with the ``lightning`` package (``import lightning``) and with the
older ``pytorch_lightning``.

Epochs: the ``nc/*`` values are logged at the end of Lightning's epoch ``trainer.current_epoch``
(counted from 0, as in the logger's ``epoch`` column); that epoch's dump is
``dumps/epoch_NNNN.safetensors`` with ``NNNN = current_epoch + 1``, the number of finished epochs
(as ``run.json``, the dump's ``epoch`` metadata and ``nctools track`` number it). So Lightning's
epoch 0 is ``epoch_0001``, and ``every_n_epochs=n`` measures after ``current_epoch`` ``n-1, 2n-1, ...``.

The run folder is kept as allnc-train keeps its own: ``out`` is checked when the callback is made,
locked from the start of ``fit`` to its end (a second run on it is refused), tidied of a killed
writer's temporaries, never written through a symbolic link; ``run.json`` is merged by epoch, so a
resumed run keeps its earlier epochs.

The callback never stops the training: a failure to measure or to write becomes one warning naming
the epoch and the reason. The dumps are float32 by default, and the logged values are computed on
the features exactly as dumped, so they equal ``nctools track``'s. The measured history is saved in
Lightning checkpoints (``state_dict``), so a run resumed with ``ckpt_path`` keeps its earlier
epochs in ``run.json``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..extras import install_hint

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError as err:
        raise ImportError("nctools.integrations.lightning needs PyTorch Lightning: "
                          f"{install_hint('lightning')}") from err

from ..core.audit import DEFAULT_GROUPS
from ..core.result import NCResult
from .recorder import EpochRecorder, run_pair

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(Callback):
    """Measure neural collapse after every ``every_n_epochs``-th training epoch.

    Args:
        dataloader: the samples to measure, without random augmentation (e.g. the training set
            with the evaluation transform).
        out: run folder for ``dumps/epoch_NNNN.safetensors`` and ``run.json`` (rank 0 writes);
            None measures and logs without keeping features.
        every_n_epochs, layer, num_classes, dump_dtype, class_counts, class_names, center, groups:
            as in :class:`~nctools.integrations.recorder.EpochRecorder` (``dump_dtype`` float32 by default).
        metadata: more dump metadata (``dataset``, ``imbalance_ratio`` ...) for track and compare.
        method: your training method's name, stored as ``method`` in the dumps and run.json
            (``nctools compare`` labels runs by it); None leaves it out.

    ``last_result`` holds the latest :class:`~nctools.NCResult`.
    """

    def __init__(self, dataloader: Iterable, out: str | Path | None = None, every_n_epochs: int = 1,
                 layer: str | None = None, num_classes: int | None = None, dump_dtype: str = "float32", *,
                 class_counts: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 center: str = "class", groups: Sequence[float] = DEFAULT_GROUPS, metadata: dict | None = None,
                 method: str | None = None):
        super().__init__()
        self.recorder = EpochRecorder(dataloader, out, every_n_epochs=every_n_epochs, layer=layer,
                                      num_classes=num_classes, dump_dtype=dump_dtype, class_counts=class_counts,
                                      class_names=class_names, center=center, groups=groups, run_batch=run_pair,
                                      metadata=metadata, method=method)
        self.last_result: NCResult | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        """Lock ``out`` before the first epoch (rank 0): a second run on it is refused here, not overwritten."""
        if trainer.is_global_zero:
            self.recorder.open()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Give the lock up when the fit ends, also after an exception or an interrupt."""
        self.recorder.close()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1  # finished epochs: Lightning's epoch 0 is dumps/epoch_0001
        if trainer.sanity_checking or not self.recorder.due(epoch):
            return
        result = self.recorder.try_record(pl_module, epoch)  # a failure is one warning, never an exception
        if result is None:
            return
        self.last_result = result
        # Every rank holds the same all-reduced numbers, so no further sync is needed.
        pl_module.log_dict(self.recorder.scalars(result), on_step=False, on_epoch=True, sync_dist=False)

    def state_dict(self) -> dict:
        """The measured epochs (run.json's ``epochs``), saved in Lightning's checkpoints."""
        return {"history": [dict(entry) for entry in self.recorder.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the measured epochs from a checkpoint, so a resumed run's run.json keeps them."""
        self.recorder.history = [dict(entry) for entry in state_dict.get("history", [])]
