"""Token caches: pre-tokenised WebDataset shards + a zarr v3 store per tokenizer variant (PAPER_NOTES §7.1).

- `manifest`: the manifest schema, its version and the one-line `CacheError` refusals;
- `views`: the cached depth augmentation views (flip x crop offset);
- `write`: deterministic shard and zarr writing;
- `build`: tokenising a prepared split (DataLoader workers decode, batched encode, whole shards per rank);
- `read`: the WebDataset training pipeline and the zarr random-access reader.
"""
