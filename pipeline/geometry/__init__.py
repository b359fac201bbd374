"""The shared geometry of the tasks, in one place: the cached views of dense labels (`views`: flip x
full-height crop), the inference windows, flips and letterbox (`windows`), instance-mask crops at a box
and their paste-back (`masks`: tokenizer crops; `paste`: detectron2-style pasting of decoded masks)."""
