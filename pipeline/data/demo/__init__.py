"""The embedded demo dataset: seeded, ray-cast NYUv2-like rooms in the real NYUv2 and COCO formats.

`ait data demo` (the `demo_data` DVC stage) renders it so that the whole pipeline runs without any
download. The files are byte-for-byte what the real loaders read (PAPER_NOTES §6; the real trees are
docs/DATA.md's):

    <out>/nyuv2/room_XXXX/rgb_XXXXX.jpg             RGB JPEG (NYUv2 / BTS "sync" layout)
    <out>/nyuv2/room_XXXX/sync_depth_XXXXX.png      uint16 PNG, millimetres, 0 = no Kinect reading
    <out>/nyuv2/room_XXXX/complete_depth_XXXXX.png  uint16 PNG, millimetres, hole-free ground truth
    <out>/nyuv2/room_XXXX/label_XXXXX.png           uint8 PNG, semantic class id, 0 = unlabelled
    <out>/nyuv2/semseg_classes.json                 [{"id", "name"}]: ids 1..N of label_*.png
    <out>/nyuv2/{train,test}_files_with_gt.txt      BTS lists: `rgb depth focal` (focal = scaled fx)
    <out>/coco/annotations/instances_{train,val}.json  COCO instances (polygons; books as crowd RLE)
    <out>/meta.json                                 config, intrinsics, categories, counts

How (one module per idea): scene.py + furniture.py lay out a random room (3-8 m x 3-8 m x 2.4-3.2 m,
shelves with books, cabinets, couches, a table with chairs, boxes, bins, balls, plants, things on
tops); camera.py holds the NYUv2 Kinect intrinsics scaled to the render size and samples camera poses;
raycast.py casts all pixels at once in NumPy; sensor.py punches Kinect-like holes (max range,
projector shadow, IR-dark and specular materials); shading.py textures and lights the hits; masks.py
turns instance masks into exact COCO polygons / RLE; semseg.py maps each hit surface to its class
(wall, floor, ceiling, then the object categories; decals count as wall); tint.py pulls object
colours toward one hue per category (`tint`, a class cue for the from-scratch demo solver; RGB only);
write.py writes deterministic files; render.py drives it. Same `DemoConfig` (seed) -> byte-identical
files on the same platform.

Why the defaults of `DemoConfig` (params.yaml `data.demo`):
* 120x160 pixels: NYUv2's 480x640 at 1/4 per side, so aspect ratio and (scaled) intrinsics are
  exactly NYUv2's while every image costs 16x less. The whole DVC pipeline (tokenizer training, token
  caching, solver training, evaluation) must finish in ~15 minutes on 2 CPU cores; at full resolution
  the tokenizers alone would not.
* 12 rooms x 16 frames = 192 images, the last 2 rooms (32 images) as the test split: rooms never
  straddle splits (NYUv2's rule), 10 training rooms give layout/material variety, 16 views per room
  give the repeated-scene, varied-viewpoint structure of NYUv2 sequences, and ~1,000 instances
  train the mask tokenizer. Rendering takes a few seconds (about 5-10 s on 2 loaded cores).
* max_range 6 m, 7.5 cm projector baseline (Kinect v1), 15 % IR-dark and 15 % specular objects give
  about 11 % invalid sensor pixels (real NYUv2 sync frames: 25-33 %, of which the unregistered
  border is a large part; the demo has no border).
"""

from __future__ import annotations

from pipeline.data.demo.render import render_demo

__all__ = ["render_demo"]
