"""The bodies of the pipeline's stages, as library calls: each loads its params, resolves its tasks
through the registry and drives the task-blind helpers below it (tokenizer training, token caches,
solver training). The `ait` commands in `stages/` only parse arguments and call these."""
