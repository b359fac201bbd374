"""`ait data …` — dataset tools: the `demo_data` DVC stage and the NYUv2 .mat importer."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import atomic_dir
from pipeline.core.params import load_section
from pipeline.core.sources import DemoConfig
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress

app = typer.Typer(no_args_is_help=True, help="Datasets: render the embedded demo, import NYUv2 .mat.")


NYU40_HELP = ("map the raw label ids to the 40 classes of Gupta et al. (NYU-40): their classMapping40.mat "
              "(CVPR 2013 code; mirrored at https://github.com/ankurhanda/nyuv2-meta-data; not shipped "
              "with this project) or a CSV of raw_id,nyu40_id lines")


class MatField(str, Enum):
    depths = "depths"
    rawDepths = "rawDepths"


@app.command("demo")
@fail_cleanly
def demo(
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data/demo"),
) -> None:
    """Render the embedded demo dataset (NYUv2 sync layout + COCO json), reads `data.demo`."""
    from pipeline.data.demo import render_demo

    cfg = load_section(params, "data.demo", DemoConfig)
    with atomic_dir(out) as tmp, progress("render demo") as cb:
        summary = render_demo(cfg, tmp, cb)
    console.print(f"demo dataset -> {out}: {summary}", highlight=False)


@app.command("import-nyu-mat")
@fail_cleanly
def import_nyu_mat(
    mat: Annotated[Path, typer.Argument(help="nyu_depth_v2_labeled.mat (HDF5 / MATLAB v7.3)")],
    splits: Annotated[Path, typer.Argument(help="splits.mat with trainNdxs / testNdxs")],
    out: Annotated[Path, typer.Option(help="output root in the BTS sync layout")] = Path("data/nyuv2"),
    field: Annotated[MatField, typer.Option(help="rawDepths (with holes, the eval GT) or depths "
                                                   "(in-painted)")] = MatField.rawDepths,
    nyu40_mapping: Annotated[Path | None, typer.Option(help=NYU40_HELP)] = None,
) -> None:
    """Convert the official labeled NYUv2 .mat into the sync layout with BTS list files.

    Also writes each frame's per-pixel labels (label_XXXXX.png) and semseg_classes.json: raw NYU label
    ids by default, the 40 classes of Gupta et al. with --nyu40-mapping.
    """
    from pipeline.data.nyu_mat import import_labeled_mat

    with atomic_dir(out) as tmp, progress("import nyu .mat") as cb:
        counts = import_labeled_mat(mat, splits, tmp, field.value, cb, nyu40_mapping)
    console.print(f"imported {counts} -> {out}; point data.tasks.depth.root (and data.tasks.semseg.root) "
                  f"at it", highlight=False)
