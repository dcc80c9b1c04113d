"""Neural collapse measured inside other people's training loops.

- :mod:`nctools.integrations.lightning`: ``NeuralCollapseCallback`` for PyTorch Lightning;
- :mod:`nctools.integrations.transformers`: ``NeuralCollapseCallback`` for the Hugging Face ``Trainer``.

Both share :class:`~nctools.integrations.recorder.EpochRecorder`, which any hand-written loop can
call too. Importing ``nctools`` never imports Lightning or transformers: each submodule imports
its framework when it is imported itself (``pip install 'neural-collapse-tools[lightning]'`` /
``'neural-collapse-tools[transformers]'``).
"""
