"""The AiT tasks, one folder each: labels -> token sequences, loss, outputs -> predictions.

- `depth/`: NYUv2 depth, 225 depth codes in raster order (PAPER_NOTES §4.4);
- `insseg/`: COCO instances, 21 tokens per object, Pix2Seq sequence augmentation (PAPER_NOTES §4.5);
- `semseg/`: per-pixel classes (NYU), class-map codes in raster order, the dense discrete case.

Beside them: the task protocol (`base.py`), the registry (`registry.py`, the one list of tasks, which
imports a task's folder by name) and the sequence helpers every task shares (`sequences.py`).
"""
