"""From what a user points at to checked tensors, and back to files.

- ``atomic``: writes that a reader never sees half-done;
- ``rows``: row sources on disk (a ``.safetensors`` tensor, a folder of shards);
- ``layout``: the run folder (``run.json``, ``checkpoints/``, ``dumps/``, ``dumps-test/``), named once;
- ``dump``: the feature-dump format (``.safetensors``, ``.pt``, ``.npz``), read and written;
  ``dump_contents``: the ``Dump`` type, ``DumpError`` and the checks every dump passes;
  ``dump_formats``: each container's reader and writer;
- ``safe_files``: files a stranger may have made, opened safely (regular files only, ``.pt`` with
  ``weights_only=True``);
- ``extraction``: features of any ``torch.nn.Module`` through a forward hook;
- ``sources``: a path (dump, shard folder, state dict with an architecture, or a checkpoint that
  a registered reader understands) -> one checked :class:`~nctools.Dump`.
- ``state_dicts``: which tensors of a saved file are the weights (nested dicts, wrapper prefixes);
- ``images``: the preprocessing of images (size, crop, statistics) and labelled image datasets.
"""
