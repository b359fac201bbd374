"""Semantic segmentation (NYU class maps): everything specific to it, from one-hot tokenizer inputs to mIoU.

`task.py` defines `TASK`, what the registry loads; the other modules are its parts."""
