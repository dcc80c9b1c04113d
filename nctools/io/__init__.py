"""From what a user points at to checked tensors, and back to files.

- ``atomic``: writes that a reader never sees half-done;
- ``rows``: row sources on disk (a ``.safetensors`` tensor, a folder of shards);
- ``dump``: the feature-dump format (``.safetensors``, ``.pt``, ``.npz``), read and written;
- ``extraction``: features of any ``torch.nn.Module`` through a forward hook;
- ``sources``: a path (dump, shard folder, state dict with an architecture, or a checkpoint that
  a registered reader understands) -> one checked :class:`~nctools.Dump`.
"""
