"""Neural collapse epoch by epoch in a Hugging Face ``Trainer`` run.

>>> from nctools.integrations.transformers import NeuralCollapseCallback   # doctest: +SKIP
>>> callback = NeuralCollapseCallback(train_eval_loader, out="runs/nc")      # doctest: +SKIP
>>> trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[callback])  # doctest: +SKIP

At the end of every ``every_n_epochs``-th epoch the callback measures the model on ``dataloader``
(:class:`~nctools.integrations.recorder.EpochRecorder`). Batches are dicts of keyword inputs with the
classes under ``labels`` (or ``label``); the model is called as ``model(**inputs)`` without the
labels, and may return a dict or a ``ModelOutput`` (its output is not used: the hook reads the
input of the classifier layer). With ``out``, the epoch's dump is written for ``nctools track out``.

Logging: the main summary keys go through ``trainer.log`` as one entry ``{"nc/<key>": ...}``, so they
reach ``state.log_history`` (hence ``trainer_state.json``) and every ``report_to`` integration
(TensorBoard, W&B ...). The Trainer's own logs (``loss``, ``grad_norm``, ``learning_rate``) are left
as they are with every ``logging_strategy``: the callback's entry comes beside them, never instead.
The callback finds its ``Trainer`` when training begins; ``attach(trainer)`` names it explicitly
(and adds the callback if needed). Without a Trainer to log through (a hand-made loop calling the
events), the values are appended to ``state.log_history`` only.

Epochs: the Trainer counts finished epochs (``state.epoch`` is 1.0 after the first), and so do the
dumps: the entry logged with ``epoch`` 1.0 belongs to ``dumps/epoch_0001.safetensors``. Whole epochs
only: a last epoch that ``max_steps`` cuts short is not measured (it would overwrite the epoch before).
The run folder is kept as in the Lightning callback: checked when made, locked while training,
``run.json`` merged by epoch (a run resumed with ``resume_from_checkpoint`` keeps its earlier epochs).

The callback never stops the training: a failure to measure or to write becomes one warning naming
the epoch and the reason. The dumps are float32 by default, and the logged values are computed on
the features exactly as dumped, so they equal ``nctools track``'s.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..extras import install_hint

try:
    from transformers import Trainer, TrainerCallback, TrainerControl
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(f"nctools.integrations.transformers needs transformers: {install_hint('transformers')}") from err

from ..core.audit import DEFAULT_GROUPS
from ..core.result import NCResult
from .recorder import EpochRecorder, run_keywords

__all__ = ["NeuralCollapseCallback"]

_WHOLE = 1e-6  # state.epoch is a whole number at the end of a complete epoch (up to float rounding)
_FRAMES_SEARCHED = 12  # how far up the call stack on_train_begin looks for the Trainer running it


class NeuralCollapseCallback(TrainerCallback):
    """Measure neural collapse after every ``every_n_epochs``-th epoch of a ``transformers.Trainer``.

    Arguments as in :class:`nctools.integrations.lightning.NeuralCollapseCallback` (``method``: your
    method's name for the dumps and run.json, default None); ``last_result`` holds the latest
    :class:`~nctools.NCResult`.
    """

    def __init__(self, dataloader: Iterable, out: str | Path | None = None, every_n_epochs: int = 1,
                 layer: str | None = None, num_classes: int | None = None, dump_dtype: str = "float32", *,
                 class_counts: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 center: str = "class", groups: Sequence[float] = DEFAULT_GROUPS, metadata: dict | None = None,
                 method: str | None = None):
        self.recorder = EpochRecorder(dataloader, out, every_n_epochs=every_n_epochs, layer=layer,
                                      num_classes=num_classes, dump_dtype=dump_dtype, class_counts=class_counts,
                                      class_names=class_names, center=center, groups=groups, run_batch=run_keywords,
                                      metadata=metadata, method=method)
        self.last_result: NCResult | None = None
        self.trainer = None
        self._attached = False

    def attach(self, trainer) -> NeuralCollapseCallback:
        """Log through ``trainer``'s ``log`` (all of its ``report_to`` integrations); adds the callback if needed."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer, self._attached = trainer, True
        return self

    def on_train_begin(self, args, state, control, **kwargs) -> TrainerControl:
        if not self._attached:  # the Trainer running this event, anew for each run
            self.trainer = self._running_trainer()
        if state.is_world_process_zero:  # a second run on out is refused here, before it trains
            self.recorder.open()
        return control

    def on_train_end(self, args, state, control, **kwargs) -> TrainerControl:
        self.recorder.close()
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> TrainerControl:
        epoch = round(state.epoch or 0)  # the Trainer counts finished epochs as a float
        if abs((state.epoch or 0) - epoch) > _WHOLE:
            return control  # a last epoch cut short (max_steps): it is not epoch `epoch` again
        if model is None or epoch < 1 or not self.recorder.due(epoch):
            return control
        result = self.recorder.try_record(model, epoch)  # a failure is one warning, never an exception
        if result is None:
            return control
        self.last_result = result
        scalars = self.recorder.scalars(result)
        if self.trainer is not None:
            # Trainer.log ends with the callbacks' on_log, which clears control.should_log: put it back, or
            # the Trainer's own log due at this epoch end (logging_strategy="epoch") would be dropped.
            due = control.should_log
            self.trainer.log(dict(scalars))
            control.should_log = control.should_log or due
            self.trainer.control.should_log = self.trainer.control.should_log or due
        elif state.is_world_process_zero:
            state.log_history.append({**scalars, "epoch": state.epoch, "step": state.global_step})
        return control

    def _running_trainer(self):
        """The ``Trainer`` whose callbacks hold this one, found among the callers of the current event."""
        frame = inspect.currentframe()
        try:
            for _ in range(_FRAMES_SEARCHED):
                frame = frame.f_back if frame is not None else None
                if frame is None:
                    break
                owner = frame.f_locals.get("self")
                if isinstance(owner, Trainer) and self in owner.callback_handler.callbacks:
                    return owner
        finally:
            del frame
        warnings.warn("nctools: NeuralCollapseCallback found no Trainer running it; nc/* go to state.log_history "
                      "only (callback.attach(trainer) sends them to every report_to integration)",
                      RuntimeWarning, stacklevel=2)
        return None
