"""Neural collapse epoch by epoch in a Hugging Face ``Trainer`` run.

>>> from nctools.integrations.transformers import NeuralCollapseCallback   # doctest: +SKIP
>>> callback = NeuralCollapseCallback(train_eval_loader, out="runs/nc")      # doctest: +SKIP
>>> trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[callback])  # doctest: +SKIP
>>> callback.attach(trainer)   # optional: log through trainer.log, i.e. every report_to integration  # doctest: +SKIP

At the end of every ``every_n_epochs``-th epoch the callback measures the model on ``dataloader``
(:class:`~nctools.integrations.recorder.EpochRecorder`). Batches are dicts of keyword inputs with the
classes under ``labels`` (or ``label``); the model is called as ``model(**inputs)`` without the
labels, and may return a dict or a ``ModelOutput`` (its output is not used: the hook reads the
input of the classifier layer). The main summary keys are added as ``nc/<key>`` to
``state.log_history`` (hence ``trainer_state.json``); after ``attach(trainer)`` they go through
``trainer.log`` instead, which also hands them to TensorBoard, W&B and the other integrations.
With ``out``, the epoch's dump is written for ``nctools track out``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

try:
    from transformers import TrainerCallback, TrainerControl
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("nctools.integrations.transformers needs transformers: "
                      "pip install 'nctools[transformers]'") from err

from ..core.audit import DEFAULT_GROUPS
from ..core.result import NCResult
from .recorder import EpochRecorder, run_keywords

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(TrainerCallback):
    """Measure neural collapse after every ``every_n_epochs``-th epoch of a ``transformers.Trainer``.

    Arguments as in :class:`nctools.integrations.lightning.NeuralCollapseCallback`; ``last_result``
    holds the latest :class:`~nctools.NCResult`.
    """

    def __init__(self, dataloader: Iterable, out: str | Path | None = None, every_n_epochs: int = 1,
                 layer: str | None = None, num_classes: int | None = None, dump_dtype: str = "float16", *,
                 class_counts: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 center: str = "class", groups: Sequence[float] = DEFAULT_GROUPS, metadata: dict | None = None):
        self.recorder = EpochRecorder(dataloader, out, every_n_epochs=every_n_epochs, layer=layer,
                                      num_classes=num_classes, dump_dtype=dump_dtype, class_counts=class_counts,
                                      class_names=class_names, center=center, groups=groups, run_batch=run_keywords,
                                      metadata={"method": "transformers", **(metadata or {})})
        self.last_result: NCResult | None = None
        self.trainer = None

    def attach(self, trainer) -> NeuralCollapseCallback:
        """Log through ``trainer.log`` (all of its ``report_to`` integrations); adds the callback if needed."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return self

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> TrainerControl:
        epoch = round(state.epoch or 0)  # the Trainer counts finished epochs as a float
        if model is None or epoch < 1 or not self.recorder.due(epoch):
            return control
        self.last_result = self.recorder.record(model, epoch)
        scalars = self.recorder.scalars(self.last_result)
        if self.trainer is not None:
            self.trainer.log(dict(scalars))
        elif state.is_world_process_zero:
            state.log_history.append({**scalars, "epoch": state.epoch, "step": state.global_step})
        return control
