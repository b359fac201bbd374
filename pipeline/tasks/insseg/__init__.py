"""Instance segmentation (COCO): everything specific to it, from mask crops to COCO evaluation.

`task.py` defines `TASK`, what the registry loads; the other modules are its parts."""
