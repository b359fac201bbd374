"""Samples/s per CPU worker of the task-solver's real loader at paper resolution; prints one JSON object.

The loader is the solver's own (bench/_paper.py: `pipeline.jobs.train_solver.batches`, i.e. `token_pipeline` +
the task's `examples`, `DepthExamples`/`collate_depth` or `InssegExamples`/`collate_insseg`, in an endless
`Batches`) over small paper-resolution caches built in a
temp dir from the shared real samples, as bench_train.py: depth = 4 NYUv2 480x640 frames (3 JPEG + 1 PNG
RGB, 16-bit PNG depth), a cached 480x480 view + the `solver.depth` RGB augmentation; instances = 40 COCO
images, LSJ 0.1-3.0 at 640 with cached mask tokens. num_workers=0 and one torch thread, as in a
DataLoader worker. The sets repeat as epochs (a fresh pipeline each, as in training): `--samples` per
repeat, one untimed warm-up repeat, median and best of `--repeats`. Also:
- `depth_breakdown_ms_per_sample`: tar read (webdataset `tarfile_to_samples`), RGB decode per format,
  16-bit PNG decode (to metres, the task's `cache_fields`), tokens + views decode, augmentation (the
  `DepthExamples` call minus its `decode_sample`), collation; and per pipeline/ function by cProfile
  (cumulative: nested ones overlap), for instances too;
- `device_augment`: ms per sample of the photometric ops the training step applies on --device to the
  uint8 batch (`augment_depth`, `color_jitter`), at the paper's per-GPU batch;
- `insseg_gpu_path`: what `InssegLoss.loss` does on --device besides the model, per batch of the paper's
  per-GPU size: fallback encodes in `targets` (boxes LSJ truncated), all-zero-mask encodes, duplicate-box
  crops (`crop_from_original`, host) and encodes, timed by wrapping the adapter's `encode_crops` and
  `pipeline.tasks.insseg.crop_from_original` during the loss only (stub model with zero logits, aux loss
  off); `fallback_fraction` = fallback
  encodes / objects at LSJ 0.1-3.0;
- `workers_per_gpu_needed` = bench_train.consume_images_per_s(FLOPs per image) / per-worker samples/s,
  FLOPs from bench_train.flops_per_image (one fwd+bwd of the paper depth / insseg run at batch 1 on
  --device: minutes on CPU) or a saved bench_train JSON (--train-json);
- `gpu_path_recomputes_cache`: facts with file:line on what the training step encodes that the cache holds.

    .venv/bin/python bench/bench_loader.py --device cpu --samples 8 --repeats 2
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import pstats
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from unittest import mock

import bench_train
import torch
import webdataset as wds
from _paper import DATA, ROOT, PaperData, median, paper_data
from _timing import sync

from pipeline.core.runtime import pick_device
from pipeline.solver_training import steps
from pipeline.solver_training.augment import color_jitter
from pipeline.tasks.depth.augment import augment_depth
from pipeline.tasks.insseg import task as insseg
from pipeline.tasks.insseg.task import InssegExamples, InssegLoss
from pipeline.tasks.registry import get_task, vocab_for
from pipeline.token_cache.read import decode_sample


def loader_rate(data: PaperData, task: str, batch: int, samples: int, repeats: int) -> dict:
    """Samples/s of the in-process loader: median and best of `repeats` after one warm-up repeat."""
    it, n = data.loader(task, batch, seed=0), max(1, samples // batch)
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for _ in range(n):
            next(it)
        rates.append(n * batch / (time.perf_counter() - start))
    return {"batch": batch, "samples_per_repeat": n * batch, "repeats": repeats,
            "samples_per_s_per_worker": round(median(rates[1:]), 2),
            "samples_per_s_best": round(max(rates[1:]), 2)}


def _ms(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return 1e3 * (time.perf_counter() - start)


def _profile(decoder, raws: list[dict], repeats: int) -> dict:
    """ms per sample of every pipeline/ function the decoder calls (cumulative, >= 0.5 ms), by cProfile."""
    profile = cProfile.Profile()
    profile.runcall(lambda: [decoder(r) for _ in range(repeats) for r in raws])
    n, out = repeats * len(raws), {}
    for (path, _line, name), (_cc, _nc, _tottime, cumtime, _callers) in pstats.Stats(profile).stats.items():
        if "/pipeline/" in path and 1e3 * cumtime / n >= 0.5:
            out[f"{Path(path).name}:{name}"] = round(1e3 * cumtime / n, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _raw_samples(data: PaperData, task: str) -> list[dict]:
    shards = [str(p) for p in data.caches[task].shards("train")]
    return list(wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples()))


def depth_breakdown(data: PaperData, repeats: int) -> dict:
    """Median ms per sample of each step of the depth loader on the cached shard(s)."""
    raws, (decoder, collate) = _raw_samples(data, "depth"), data.examples("depth")
    label_fields = get_task("depth").cache_fields  # its label file decodes to metres, as in the loader
    times = defaultdict(list)
    for _ in range(repeats):
        times["tar_read"].append(_ms(_raw_samples, data, "depth") / len(raws))
        for raw in raws:
            fields = [f for f in raw if not f.startswith("__")]
            for name in {"rgb.png", "rgb.jpg", "depth.png"} & set(fields):  # the rgb key says its format
                one = {"__key__": raw["__key__"], name: raw[name]}
                times[name].append(_ms(decode_sample, one, label_fields))
            meta = {f: raw[f] for f in fields if f.startswith(("tokens", "views"))}
            times["tokens_views"].append(_ms(decode_sample, {"__key__": raw["__key__"], **meta}))
            times["augmentation"].append(_ms(decoder, raw) - _ms(decode_sample, raw, label_fields))
        times["collate"].append(_ms(collate, [decoder(r) for r in raws]) / len(raws))
    out = {k.replace(".", "_"): round(median(v), 2) for k, v in times.items()}
    out["by_function_cprofile"] = _profile(decoder, raws, repeats)
    return out


class _Probe:
    """Times one InssegLoss's `encode_crops` by call site, and `crop_from_original`.

    Sites: encodes inside `targets` are the fallback, inside `zero_mask` the all-zero mask (its input is
    checked; the adapter caches its codes, so after the warm-up batch none is expected), the rest are the
    duplicates of `build_sequences`.
    """

    def __init__(self, head: InssegLoss, device: torch.device) -> None:
        self.device, self.phase, self.zero_input_is_zero = device, "duplicates", True
        self.encode, self.crop = head.encode_crops, insseg.crop_from_original
        self.targets, self.zero = head.targets, head.zero_mask
        self.seconds, self.crops = defaultdict(float), defaultdict(int)

    def encode_crops(self, crops: list, device):
        site = self.phase
        if site == "zero_mask":
            self.zero_input_is_zero &= len(crops) == 1 and not crops[0].any()
        start = time.perf_counter()
        out = self.encode(crops, device)
        sync(self.device)
        self.seconds[f"{site}_encode"] += time.perf_counter() - start
        self.crops[site] += len(crops)
        self.crops[f"{site}_calls"] += 1
        return out

    def _in(self, phase: str, fn, *args):
        self.phase = phase
        try:
            return fn(*args)
        finally:
            self.phase = "duplicates"

    def targets_(self, batch, device):
        return self._in("fallback", self.targets, batch, device)

    def zero_mask_(self, device):
        return self._in("zero_mask", self.zero, device)

    def crop_from_original(self, *args):
        start = time.perf_counter()
        out = self.crop(*args)
        self.seconds["duplicate_crop"] += time.perf_counter() - start
        return out


def insseg_gpu_path(data: PaperData, device: torch.device, batch: int, batches: int) -> dict:
    """Per-batch cost of InssegLoss.loss without the model: fallback, zero-mask and duplicate encodes."""
    head = data.loss_adapter("insseg")
    steps.freeze(head.tokenizer).to(device)
    head.cfg = replace(head.cfg, aux_weight=0.0)  # no soft decode: only the target building runs
    solver = data.cfg["solver"]
    vocab = vocab_for(solver.num_bins, {"insseg": data.caches["insseg"].manifest}, solver.spare_codes)

    def stub(images, _task, tokens_in):
        return torch.zeros(images.shape[0], tokens_in.shape[1] + 1, vocab.size, device=device)

    probe, it, generator = _Probe(head, device), data.loader("insseg", batch, seed=0), torch.Generator()
    head.encode_crops, head.targets, head.zero_mask = probe.encode_crops, probe.targets_, probe.zero_mask_
    per_batch, objects, images = [], 0, 0
    for i in range(batches + 1):  # the first batch warms up
        b = next(it)  # unpatched: the loader's own crops (InssegExamples) are not the loss's
        # the loss and the loader share `pipeline.tasks.insseg.crop_from_original`: patched for the loss only
        with mock.patch.object(insseg, "crop_from_original", probe.crop_from_original):
            start = time.perf_counter()
            head.loss(stub, b, vocab, device, generator.manual_seed(i))
            sync(device)
            seconds = time.perf_counter() - start
        if i == 0:
            probe.seconds.clear()
            probe.crops.clear()
            continue
        per_batch.append(seconds)
        objects, images = objects + sum(len(o) for o in b["objects"]), images + len(b["objects"])
    calls = {k: v / batches for k, v in probe.crops.items() if k.endswith("calls")}
    return {"device": str(device), "batch": batch, "batches": batches,
            "objects_per_image": round(objects / images, 2),
            "loss_without_model_s_per_batch": round(median(per_batch), 4),
            "seconds_per_batch": {k: round(v / batches, 4) for k, v in probe.seconds.items()},
            "crops_per_image": {k: round(v / images, 2) for k, v in probe.crops.items() if k not in calls},
            "calls_per_batch": calls, "zero_mask_input_all_zero": probe.zero_input_is_zero,
            "fallback_fraction": round(probe.crops["fallback"] / max(objects, 1), 4)}


def device_augment(data: PaperData, device: torch.device, batch: dict[str, int], repeats: int) -> dict:
    """ms per sample of the photometric ops the step applies on --device (moved out of the workers):
    `augment_depth` and `color_jitter` on one collated batch of the paper's per-GPU size."""
    out = {}
    for task, fn in (("depth", lambda b: augment_depth(b["images"], b["depth"], b["augment"])),
                     ("insseg", lambda b: color_jitter(b["images"], b["color"]))):
        b = next(data.loader(task, batch[task], seed=0))
        b = {k: v.to(device) for k, v in b.items() if isinstance(v, torch.Tensor)}
        times = []
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            fn(b)
            sync(device)
            times.append(1e3 * (time.perf_counter() - start) / batch[task])
        out[task] = {"batch": batch[task], "ms_per_sample": round(median(times[1:]), 3)}
    return out


def _where(fn, needle: str) -> str:
    """`path:line` of the first source line of `fn` that contains `needle`."""
    lines, first = inspect.getsourcelines(fn)
    path = Path(inspect.getsourcefile(fn)).relative_to(ROOT)
    return f"{path}:{first + next(i for i, s in enumerate(lines) if needle in s)}"


def cache_facts(probe: dict) -> dict:
    zero = probe["calls_per_batch"].get("zero_mask_calls", 0)
    return {
        "zero_mask_token_encoded_every_step": zero >= 1 and probe["zero_mask_input_all_zero"],
        "zero_mask_encodes_per_batch": zero,
        "zero_mask_site": _where(InssegLoss.zero_mask, "np.zeros"),
        "insseg_fallback_encodes_site": _where(InssegLoss.targets, "encode_crops(missing"),
        "duplicate_crops_on_host_site": _where(InssegLoss.loss, "crop_from_original("),
        "depth_head_encodes": "no: DepthLoss.loss reads the cached view tokens; the tokenizer runs only "
                              "as the aux-loss soft decoder",
        "loader_rasterises_all_masks_per_sample": _where(InssegExamples.__call__, "segmentation_to_mask("),
        "loader_crops_every_kept_object": _where(InssegExamples.__call__, "crop_from_original("),
    }


def consume_rates(data: PaperData, device: torch.device, train_json: Path | None) -> dict:
    """Per task: FLOPs per image (fwd+bwd) and the images/s one GPU eats at 40 % H100 MFU."""
    if train_json:
        report = json.loads(train_json.read_text())
        flops = {t: report[t]["flops_per_image_fwd_bwd"] for t in ("depth", "insseg")}
    else:
        flops = {t: bench_train.flops_per_image(data, t, device, {t: 1})["fwd_bwd"]
                 for t in ("depth", "insseg")}
    return {t: {"flops_per_image_fwd_bwd": f, "source": str(train_json or "bench_train.flops_per_image"),
                "consume_images_per_s_at_40pct_h100_mfu": round(bench_train.consume_images_per_s(f), 2)}
            for t, f in flops.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="device of the insseg encodes and FLOP count")
    parser.add_argument("--samples", type=int, default=32, help="samples per timed repeat and task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="loader batch (0: the paper's per-GPU batch)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the paper's global batch is split over")
    parser.add_argument("--insseg-batches", type=int, default=8, help="batches timed for the GPU path")
    parser.add_argument("--train-json", type=Path, default=None, help="bench_train.py output (FLOPs)")
    parser.add_argument("--data", type=Path, default=DATA, help="shared samples root")
    args = parser.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    report: dict = {"device": str(device), "torch_threads": torch.get_num_threads(), "num_workers": 0,
                    "loader_torch_threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        data = paper_data(Path(tmp), ["depth", "insseg"], device, data=args.data)
        report["cache"] = {"samples": data.samples, "build_s": data.build_s}
        runs = data.cfg["solver"].runs
        batch = {t: args.batch or bench_train.per_process_batch(runs[t].batch_size, args.gpus)[0][t]
                 for t in ("depth", "insseg")}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a DataLoader worker, where torch sets one intra-op thread
        rates = {t: loader_rate(data, t, batch[t], args.samples, args.repeats) for t in batch}
        report["loader"] = rates
        report["depth_breakdown_ms_per_sample"] = depth_breakdown(data, args.repeats)
        insseg_raws = _raw_samples(data, "insseg")[: args.samples]
        report["insseg_by_function_ms_per_sample"] = _profile(data.examples("insseg")[0], insseg_raws, 1)
        torch.set_num_threads(threads)
        report["device_augment"] = device_augment(data, device, batch, args.repeats)
        report["insseg_gpu_path"] = insseg_gpu_path(data, device, batch["insseg"], args.insseg_batches)
        report["gpu_path_recomputes_cache"] = cache_facts(report["insseg_gpu_path"])
        consume = consume_rates(data, device, args.train_json)
    report["consume"] = consume
    report["workers_per_gpu_needed"] = {t: round(consume[t]["consume_images_per_s_at_40pct_h100_mfu"]
                                                  / rates[t]["samples_per_s_per_worker"], 1) for t in rates}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
