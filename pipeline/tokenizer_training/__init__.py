"""Tokenizer-side pure helpers: depth mask augmentation, instance-mask box crops, interpolation baselines."""
