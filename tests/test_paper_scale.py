"""The paper configuration EXECUTED at paper size on CPU, through the real stage and solver code paths.

Config = params.yaml merged with presets/paper.yaml (as `ait preset` applies it); no paper number is
retyped here. The only overrides are where the data lives (the shared real samples), the cache loader
worker counts (0: in-process on the CPU test box) and backbone gradient checkpointing (same results,
far less memory); shapes, sizes and schedules are the preset's.
Tokenizers are the paper-size VQ-VAEs, randomly initialised from a seed (shapes, throughput and the
plumbing do not depend on training); the SwinV2-B backbone is built with pretrained=False.

- a depth token cache of two real 480x640 NYU frames, read back through the solver's reader;
- one training step of the depth run at 480² (SwinV2-B, 6+6 transformer, aux SiLog, AdamW groups);
- one training step of the instance run at 640² (100 objects = 2100 tokens, LSJ, cached-mask fallback);
- KV-cache generation of the full 2100-token sequence for a 640² image, ending in COCO results.

Budget: a SwinV2-B step at 640² takes minutes on 2 CPU cores (and ~16.5 GB of host memory without
gradient checkpointing: fp32 window attention), the 2100-step generation about a minute more, so every
test here is marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.io import read_jsonl
from pipeline.core.optim import build_optimizer, build_scheduler
from pipeline.core.params import load_all
from pipeline.core.runtime import seed_everything
from pipeline.core.vocab import Vocab
from pipeline.data.nyu import read_rgb
from pipeline.geometry.views import dense_views, extract_views, views_to_json
from pipeline.jobs import train_solver as solver_run
from pipeline.models.ait import build_ait, param_groups, solver_config
from pipeline.models.vqvae import VQVAE, grid_shape, load_vqvae
from pipeline.presets import merged
from pipeline.solver_training.steps import TrainStep
from pipeline.solver_training.train import Cadence, Trainer, fit
from pipeline.tasks.depth.augment import DEPTH_DRAW_SIZE
from pipeline.tasks.insseg import sequence as insseg_task
from pipeline.tasks.insseg.evaluate import coco_results
from pipeline.tasks.insseg.task import infer_instances
from pipeline.tasks.registry import get_task, vocab_for
from pipeline.token_cache.read import ZarrTokens, decode_sample, iter_tar_samples, open_cache
from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
NYU_TRAIN_LIST = "nyudepthv2_sample_train_files_with_gt.txt"
COCO_JSON = "annotations/instances_sample.json"
CPU = torch.device("cpu")

pytestmark = pytest.mark.slow  # paper-size models on CPU: tens of seconds to minutes per test


# -------------------------------------------------------------------------------------------------
# fixtures: the paper params over the shared samples, prepared data, paper-size tokenizers, caches


def _invoke(args: list[str], cwd: Path) -> None:
    with pytest.MonkeyPatch.context() as m:  # outside any git/DVC repository, as a fresh project
        m.chdir(cwd)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"ait {' '.join(args)} failed:\n{result.output}"


@pytest.fixture(scope="module")
def project(shared_data: Path, tmp_path_factory) -> SimpleNamespace:
    """params.yaml + presets/paper.yaml pointed at the shared samples, validated by `load_all`."""
    root = tmp_path_factory.mktemp("paper_scale")
    nyu, coco = shared_data / "nyuv2_sample", shared_data / "coco_sample"
    # Two real 480x640 Kinect frames (with holes) for train, a third for the test split.
    frames = [line for line in (nyu / NYU_TRAIN_LIST).read_text().splitlines() if "metric3d_nyu_demo" in line]
    (root / "train_list.txt").write_text("\n".join(frames[:2]) + "\n")
    (root / "test_list.txt").write_text(frames[2] + "\n")
    combined = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))
    combined = merged(combined, {
        "data": {"tasks": {
            "depth": {"source": "nyuv2", "root": str(nyu), "layout": "sync",
                      "train_list": str(root / "train_list.txt"), "test_list": str(root / "test_list.txt")},
            "insseg": {"source": "coco", "root": str(coco), "train_images": "images", "train_json": COCO_JSON,
                       "val_images": "images", "val_json": COCO_JSON}}},
        # in-process loading on the CPU test box (the preset's 4-8 workers would fork on 2 cores)
        "cache": {"depth": {"num_workers": 0}, "insseg": {"num_workers": 0}},
        # same outputs and gradients; without it one 640² step peaks at ~16.5 GB RSS on CPU (measured),
        # which the OOM killer stopped on the shared 23 GB test box
        "solver": {"backbone": {"grad_checkpointing": True}},
    })
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(combined, sort_keys=False))
    return SimpleNamespace(root=root, params=params, paper=load_all(params), coco=coco)


def _random_tokenizer(project: SimpleNamespace, task: str, variant: str, seed: int) -> Path:
    """A seeded, randomly initialised paper-size VQ-VAE saved as `train_tokenizer` saves its checkpoint."""
    section = getattr(project.paper["tokenizer"], task)
    torch.manual_seed(seed)
    model = VQVAE(section.model)
    out = project.root / "models/tokenizer" / variant
    spec = project.paper["tokenizer"].variants[variant]
    checkpoint.save(out, model, section.model, {
        "kind": "vqvae", "task": task, "variant": variant, "mask_ratio": spec.mask_ratio,
        "train": dataclasses.asdict(section.train), "num_train_samples": 0})
    return out


def _cache(project: SimpleNamespace, task: str, variant: str, seed: int) -> SimpleNamespace:
    """`ait prepare TASK` + `ait cache-tokens VARIANT` with a random paper-size tokenizer."""
    root, params = project.root, str(project.params)
    _invoke(["prepare", task, "--params", params, "--out", str(root / "data/prepared" / task)], root)
    model_dir = _random_tokenizer(project, task, variant, seed)
    out = root / "data/tokens" / variant
    _invoke(["cache-tokens", variant, "--params", params, "--prepared", str(root / "data/prepared"),
             "--model-dir", str(model_dir), "--out", str(out), "--device", "cpu"], root)
    tokenizer, config = load_vqvae(model_dir)
    return SimpleNamespace(info=open_cache(out, config["content_hash"]), model_dir=model_dir,
                           tokenizer=tokenizer, prepared=root / "data/prepared" / task)


@pytest.fixture(scope="module")
def depth_cache(project) -> SimpleNamespace:
    variant = project.paper["tokenizer"].solver_variants["depth"]
    return _cache(project, "depth", variant, seed=project.paper["base"].seed + 1)


@pytest.fixture(scope="module")
def insseg_cache(project) -> SimpleNamespace:
    return _cache(project, "insseg", "insseg", seed=project.paper["base"].seed + 2)


def _solver(project: SimpleNamespace, run: str, caches: dict[str, SimpleNamespace]) -> SimpleNamespace:
    """The run's vocabulary, architecture and model, wired exactly as `ait train-solver RUN` wires them."""
    solver = project.paper["solver"]
    cfg = solver.runs[run]
    tasks = {t: getattr(solver, t) for t in cfg.tasks}
    vocab = vocab_for(solver.num_bins, {t: c.info.manifest for t, c in caches.items()}, solver.spare_codes)
    recipes = {t: get_task(t).training(caches[t].info.manifest, tasks[t]) for t in tasks}
    length = max(r.sequence_length for r in recipes.values())
    seed_everything(project.paper["base"].seed)
    backbone = solver_run.run_backbone(solver.backbone, recipes)
    model = build_ait(backbone, solver_config(solver.model, length, cfg.parallel), vocab)
    return SimpleNamespace(model=model, vocab=vocab, length=length, cfg=cfg, tasks=tasks)


@pytest.fixture(scope="module")
def insseg_solver(project, insseg_cache) -> SimpleNamespace:
    return _solver(project, "insseg", {"insseg": insseg_cache})


# -------------------------------------------------------------------------------------------------
# helpers for one training step


def _capture_logits_shape(model) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    shapes: list[tuple[int, ...]] = []
    handle = model.solver.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    return shapes, handle


def _train_one_step(project, solver, task: str, cache, batch: dict) -> tuple[dict, dict, list, TrainStep]:
    """fit() for one step on `batch` with the run's TrainStep, AdamW groups, schedule and clipping.

    Returns the logged values, the snapshot of the parameters before the step, the logits shapes and the
    TrainStep (its frozen tokenizer, its model with the gradients of the step still attached).
    """
    cfg, model = solver.cfg, solver.model
    head = solver_run.loss_adapter(get_task(task).training(cache.info.manifest, solver.tasks[task]), cache.info,
                                   cache.model_dir)
    step = TrainStep(model, {task: head}, cfg.loss_weights, solver.vocab)
    optimizer = build_optimizer(param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.layer_decay),
                                cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
    # every trainable parameter is in exactly one group; the frozen tokenizer is in none
    in_groups = [p for g in optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in in_groups}) == len(in_groups) == len(list(model.parameters()))
    assert not {id(p) for p in head.tokenizer.parameters()} & {id(p) for p in in_groups}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in _checked(model)}
    tokenizer_before = {k: v.clone() for k, v in head.tokenizer.state_dict().items()}
    shapes, handle = _capture_logits_shape(model)
    logs: list[dict] = []
    try:
        fit(Trainer(step, model, optimizer, scheduler, torch.Generator().manual_seed(project.paper["base"].seed),
                    CPU), {task: iter([batch])},
            Cadence(0, 1, cfg.optim.grad_clip, cfg.log_every, cfg.checkpoint_every),
            lambda s, values: logs.append(values), lambda s: None)
    finally:
        handle.remove()
    assert len(logs) == 1
    for k, v in head.tokenizer.state_dict().items():  # the frozen detokenizer did not move
        torch.testing.assert_close(v, tokenizer_before[k], rtol=0, atol=0)
    return logs[0], before, shapes, step


# Parameters that must get gradient from the FIRST step. A freshly initialised SwinV2 (pretrained=False)
# zero-initialises every block's residual post-norm gain (timm `_init_respostnorm`, as the official
# SwinV2), so its attention / MLP branches output 0 and their weights get exactly zero gradient at step 0;
# the gradient reaches the backbone through the residual stream: patch embedding, those post-norm gains,
# the patch mergings and the final norm.
CHECKED = (
    "backbone.body.patch_embed.proj.weight",
    "backbone.body.layers.0.blocks.0.norm1.weight",
    "backbone.body.layers.1.downsample.reduction.weight",
    "backbone.body.layers.2.blocks.17.norm2.weight",
    "backbone.body.layers.3.blocks.1.norm1.bias",
    "backbone.body.norm.weight",
    "solver.input_proj.weight",
    "solver.encoder.0.attn.wq.weight",
    "solver.encoder.5.mlp.fc2.bias",
    "solver.decoder.0.attn.wk.weight",
    "solver.decoder.5.cross_attn.wv.weight",
    "solver.decoder.5.mlp.fc1.bias",
    "solver.token_embed",
    "solver.task_embed",
    "solver.pos_embed",
    "solver.out_bias",
)


def _checked(model) -> tuple[str, ...]:
    names = dict(model.named_parameters())
    missing = [n for n in CHECKED if n not in names]
    assert not missing, f"parameter names changed: {missing}"
    return CHECKED


def _assert_step_reached_everything(model, before: dict, tokenizer: VQVAE, vocab: Vocab,
                                    token_kinds: tuple[str, ...]) -> None:
    params = dict(model.named_parameters())
    for name in _checked(model):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, f"zero gradient on {name}"
        assert not torch.equal(params[name].detach(), before[name]), f"{name} did not change"
    rows = params["solver.token_embed"].grad.abs().sum(1)
    for kind in token_kinds:  # the embedding rows of the task's targets get gradient (tied logits)
        r = vocab.task_range(kind)
        assert rows[r.start : r.stop].sum() > 0, kind
    assert all(p.grad is None and not p.requires_grad for p in tokenizer.parameters())


def _assert_windows_shift_where_the_map_exceeds_them(model, size: int) -> None:
    """PAPER_NOTES §4.1: a SwinV2 stage shifts its windows iff its feature map at the run's input `size` is
    larger than its window (480²: stages 1-2 shift, 3-4 are one window each; 640²: all four shift)."""
    body = model.backbone.body
    stride = body.patch_embed.patch_size[0]
    for i, stage in enumerate(body.layers):
        side = math.ceil(size / (stride * 2**i))
        window = stage.blocks[0].window_size[0]
        shifted = any(any(b.shift_size) for b in stage.blocks)
        assert shifted == (side > window), f"stage {i + 1}: {side}² map, window {window}, shifted {shifted}"


# -------------------------------------------------------------------------------------------------
# depth


def test_depth_cache_of_real_frames_reads_back_as_paper_views(project, depth_cache):
    paper, info, tokenizer = project.paper, depth_cache.info, depth_cache.tokenizer
    crop, stride = paper["cache"].depth.crop_size, paper["cache"].depth.crop_stride
    records = sorted(read_jsonl(depth_cache.prepared / "train.jsonl"), key=lambda r: r["key"])
    width = records[0]["width"]
    assert len(records) == 2 and all((r["height"], r["width"]) == (crop, width) for r in records)
    offsets = list(range(0, width - crop + 1, stride))  # 0, 32, ..., 160 at the paper's 480 of 640
    grid = grid_shape(tokenizer.cfg, crop, crop)  # 15x15 with downsample 32
    manifest = info.manifest
    assert manifest["views"]["list"] == [{"flip": f, "x": x} for f in (0, 1) for x in offsets]
    assert manifest["views"]["tokens_shape"] == [2 * len(offsets), *grid]
    assert manifest["tokenizer"]["grid"] == list(grid)

    # every cached view of every frame = the tokenizer's encode of that view of the real GT (holes kept)
    views = dense_views(crop, width, crop, stride)
    zarr_tokens = ZarrTokens(info.root, "train")
    shard = info.shards("train")[0]
    for i, (raw, record) in enumerate(zip(iter_tar_samples(shard), records, strict=True)):
        sample = decode_sample(raw, get_task("depth").cache_fields)
        assert sample["key"] == record["key"] and sample["views"] == views_to_json(views)
        assert sample["tokens"].shape == (len(views), *grid)
        np.testing.assert_array_equal(sample["tokens"], zarr_tokens[i])
        crops = torch.from_numpy(extract_views(sample["depth"], views, crop))[:, None]
        np.testing.assert_array_equal(sample["tokens"], tokenizer.encode(crops).numpy())
        assert len(np.unique(sample["tokens"])) > 1  # a non-trivial reference, not one code everywhere

    # the solver's reader (token_pipeline + DepthExamples + collate_depth, as `train-solver` builds it):
    # one random cached view per frame
    B = len(records)
    recipe = get_task("depth").training(info.manifest, paper["solver"].depth)
    batch = next(solver_run.batches(recipe, info, B, 0, paper["base"].seed))
    assert batch["images"].shape == (B, 3, crop, crop) and batch["images"].dtype == torch.uint8
    assert batch["augment"].shape == (B, DEPTH_DRAW_SIZE)  # applied on the training device
    assert batch["depth"].shape == (B, 1, crop, crop) and batch["indices"].shape == (B, *grid)
    depth = batch["depth"]
    assert (depth == 0).float().mean() > 0.05  # Kinect holes stay 0 (~25-33 % of these frames)
    valid = depth[depth > 0]
    assert 0.3 < valid.min() and valid.max() < 10.0  # metres, not millimetres
    # reference: the tokens the reader hands out are the encode of exactly the depth view it hands out
    np.testing.assert_array_equal(batch["indices"].numpy(), tokenizer.encode(depth).numpy())
    for b, key in enumerate(batch["keys"]):
        full = decode_sample(next(r for r in iter_tar_samples(shard) if r["__key__"] == key),
                             get_task("depth").cache_fields)["depth"]
        all_views = extract_views(full, views, crop)
        hits = [v for v in range(len(views)) if np.array_equal(all_views[v], depth[b, 0].numpy())]
        assert hits, f"{key}: the decoded depth is none of the cached views"


def test_depth_run_trains_one_step_at_480(project, depth_cache):
    solver = _solver(project, "depth", {"depth": depth_cache})
    crop = depth_cache.info.manifest["views"]["crop_size"]
    grid = depth_cache.info.manifest["tokenizer"]["grid"]
    assert solver.length == grid[0] * grid[1]
    # a real 480x480 crop of a real NYU frame, through the run's own batch iterator (batch 1)
    batches = solver_run.batches(get_task("depth").training(depth_cache.info.manifest, solver.tasks["depth"]),
                                 depth_cache.info, 1, 0, project.paper["base"].seed)
    batch = next(batches)
    assert batch["images"].shape == (1, 3, crop, crop) and (batch["depth"] == 0).any()

    _assert_windows_shift_where_the_map_exceeds_them(solver.model, crop)

    logs, before, shapes, step = _train_one_step(project, solver, "depth", depth_cache, batch)

    assert shapes == [(1, solver.length, solver.vocab.size)]
    assert math.isfinite(logs["loss"]) and logs["loss"] > 0
    assert "depth/silog" in logs and math.isfinite(logs["depth/silog"]) and logs["depth/silog"] > 0
    assert math.isfinite(logs["depth/ce"]) and math.isfinite(logs["grad_norm"]) and logs["grad_norm"] > 0
    _assert_step_reached_everything(solver.model, before, step.heads["depth"].tokenizer, solver.vocab,
                                    ("depth",))


# -------------------------------------------------------------------------------------------------
# instances


def _fallback_batch(batches, draws: int) -> dict:
    """The first batch (within `draws`) with an object whose box the jitter window truncated."""
    for _ in range(draws):
        batch = next(batches)
        if any(o["indices"] is None for objs in batch["objects"] for o in objs):
            return batch
    raise AssertionError(f"no truncated box in {draws} large-scale-jitter draws")


def test_insseg_run_trains_one_step_at_640_with_the_cached_mask_fallback(project, insseg_cache,
                                                                         insseg_solver):
    cfg = insseg_solver.tasks["insseg"]
    size = cfg.image_size
    T = insseg_task.tokens_per_object(math.prod(insseg_task.mask_grid(insseg_cache.tokenizer)))
    assert insseg_solver.length == cfg.num_query * T  # 100 objects x 21 tokens
    # the run's own batch iterator (LSJ 0.1-3.0 at 640, batch 1), drawn until a box is truncated
    batches = solver_run.batches(get_task("insseg").training(insseg_cache.info.manifest, cfg), insseg_cache.info, 1,
                                 0, project.paper["base"].seed)
    batch = _fallback_batch(batches, draws=20)
    objects = batch["objects"][0]
    assert batch["images"].shape == (1, 3, size, size)
    boxes = np.array([o["box"] for o in objects])
    assert boxes.min() >= 0 and boxes.max() <= size
    # the exact (cached) objects: their cached tokens are the tokenizer's encode of their GT crop
    crop = insseg_cache.info.manifest["mask_crop_size"]
    exact = [o for o in objects if o["indices"] is not None]
    if exact:
        codes = insseg_cache.tokenizer.encode(torch.from_numpy(np.stack([o["crop"] for o in exact]))[:, None])
        np.testing.assert_array_equal(codes.flatten(1).numpy(), np.stack([o["indices"] for o in exact]))
    assert all(o["crop"].shape == (crop, crop) for o in objects)

    logs, before, shapes, step = _train_one_step(project, insseg_solver, "insseg", insseg_cache, batch)

    assert shapes == [(1, insseg_solver.length, insseg_solver.vocab.size)]
    assert math.isfinite(logs["loss"]) and logs["loss"] > 0
    assert cfg.aux_weight > 0  # the paper's Dice + MSE aux term is on, and it ran
    for part in ("insseg/dice", "insseg/mse", "insseg/ce"):
        assert part in logs and math.isfinite(logs[part]), part
    assert logs["insseg/dice"] > 0
    missing = sum(o["indices"] is None for o in objects)
    assert logs["insseg/fallback_fraction"] == pytest.approx(missing / len(objects)) and missing > 0
    _assert_step_reached_everything(insseg_solver.model, before, step.heads["insseg"].tokenizer,
                                    insseg_solver.vocab, ("coord", "class", "mask"))
    insseg_solver.model.zero_grad(set_to_none=True)


def test_insseg_backbone_shifts_its_windows_at_640(insseg_solver):
    _assert_windows_shift_where_the_map_exceeds_them(insseg_solver.model,
                                                     insseg_solver.tasks["insseg"].image_size)


@pytest.fixture(scope="module")
def generated(project, insseg_cache, insseg_solver, tmp_path_factory) -> SimpleNamespace:
    """One 640² COCO image through `infer_instances` (letterbox, SwinV2-B, KV-cache generate of the full
    sequence, decode, paste) -> the generated tokens and its COCO results loaded by pycocotools."""
    from pycocotools.coco import COCO

    cfg, vocab, model = insseg_solver.tasks["insseg"], insseg_solver.vocab, insseg_solver.model
    model.zero_grad(set_to_none=True)
    model.eval()
    category_ids = [c["id"] for c in insseg_cache.info.manifest["categories"]]
    record = sorted(read_jsonl(insseg_cache.prepared / "val.jsonl"), key=lambda r: r["key"])[0]
    image = read_rgb(record["image"])
    captured = {}
    original = model.solver.generate

    def spy(*args, **kwargs):  # the real KV-cache generate; keeps its tokens for the range checks
        # One decode step is a few tiny ops at batch 1: two OpenMP threads on a busy 2-core box cost
        # ~100 ms per step in wake-ups (2100 steps!), one thread ~20 ms. Same code, fewer threads.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            captured["tokens"], logits = original(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        return captured["tokens"], logits

    with pytest.MonkeyPatch.context() as m:
        m.setattr(model.solver, "generate", spy)
        preds = infer_instances(model, insseg_cache.tokenizer, vocab, cfg, project.paper["evaluate"].insseg,
                                [image], category_ids,
                                generator=torch.Generator().manual_seed(project.paper["base"].seed))
    results = coco_results(record["image_id"], preds[0])
    path = tmp_path_factory.mktemp("coco_results") / "results.json"
    path.write_text(json.dumps(results))
    gt = COCO(str(project.coco / COCO_JSON))  # the coco_sample ground truth the image belongs to
    res = gt.loadRes(str(path))
    return SimpleNamespace(tokens=captured["tokens"], record=record, hw=image.shape[:2], gt=gt,
                           anns=res.loadAnns(res.getAnnIds()), cfg=cfg, vocab=vocab)


def test_insseg_generation_is_2100_tokens_each_in_its_slots_legal_range(project, insseg_cache, generated):
    cfg, vocab, tokens = generated.cfg, generated.vocab, generated.tokens
    T = insseg_task.tokens_per_object(math.prod(insseg_task.mask_grid(insseg_cache.tokenizer)))
    assert tokens.shape == (1, cfg.num_query * T) and tokens.dtype == torch.long
    coord = vocab.task_range("coord")
    assert coord == range(0, project.paper["solver"].num_bins + 1)  # box bins 0..2000
    slots = tokens.view(cfg.num_query, T)
    for kind, cols in (("coord", slice(0, insseg_task.BOX_TOKENS)),
                       ("class", slice(insseg_task.CLASS_SLOT, insseg_task.MASK_START)),
                       ("mask", slice(insseg_task.MASK_START, None))):
        r, values = vocab.task_range(kind), slots[:, cols]
        assert r.start <= int(values.min()) and int(values.max()) < r.stop, kind


def test_insseg_generation_ends_in_valid_coco_results(generated):
    from pycocotools import mask as mask_utils

    (H, W), record = generated.hw, generated.record
    known = set(generated.gt.getCatIds())
    assert generated.anns, "no detection at all"
    # Boxes are token · 640 / 2000 in the letterboxed input, / scale: inside [0, long side] in original
    # pixels. They are not clipped to the image content (neither does the official code, PAPER_NOTES §4.5).
    # A degenerate box (x2 <= x1 or y2 <= y1: w or h <= 0) is kept as generated, with an empty mask, as the
    # official code (decode_objects); COCOeval scores it as a false positive.
    side = max(H, W)
    for ann in generated.anns:
        x, y, w, h = ann["bbox"]
        assert all(-1e-3 <= v <= side + 1e-3 for v in (x, y, x + w, y + h))
        mask = mask_utils.decode(ann["segmentation"])
        assert mask.shape == (H, W)
        if w <= 0 or h <= 0:
            assert not mask.any()
        assert ann["category_id"] in known and ann["image_id"] == record["image_id"]
        assert 0 < ann["score"] < 1


def test_insseg_generation_gives_one_detection_per_query(generated):
    # PAPER_NOTES §4.5 / §5.2: no EOS, every image yields exactly num_query (100) detections.
    detections, queries = len(generated.anns), generated.cfg.num_query
    assert detections == queries, f"{detections} COCO detections for {queries} generated objects"
