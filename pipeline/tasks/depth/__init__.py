"""Depth estimation (NYUv2): everything specific to it, from tokenizer crops to evaluation.

`task.py` defines `TASK`, what the registry loads; the other modules are its parts."""
