#!/usr/bin/env python
"""What a CPU cannot show, in one prepared run on one GPU (issue 18): each family's training images/s and sampling
latency at the seed configurations, fp32 and bf16, eager and ``torch.compile``d, with MFU against the device's
measured matmul peak; then the main job's DDPM trained for a few minutes to show its loss falling.

    bash scripts/gpu_check.sh                 # on a GPU machine: under 8 minutes, writes gpu-check/
    python scripts/gpu_check.py --dry         # the same code path on this CPU with tiny sizes (what the test runs)

Models are built straight from the suites' ``paper`` profiles (seed 000's and seed 001's configurations) and, for
the families no seed configures (glow, flow matching, GANs, NCSN), from the wrapper's defaults at MNIST 1x32x32.
Training batches are random uint8 images with labels: throughput does not depend on the pixels. It imports only
the registry, the wrappers, the suite loader and the data loader (no metric modules), so a machine with
torch alone runs it. Nothing here is a test; ``tests/test_gpu_check.py`` runs ``--dry``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.data import load_split  # noqa: E402
from bench.registry import Batch, DataSpec, get  # noqa: E402
from bench.suite import load_suite, model_config  # noqa: E402

MNIST = DataSpec(1, 32, 32, 10)
# (label, suite, run) from a paper profile: seed 000 (mnist-flow-vs-ddpm) and seed 001 (mnist-daf-vs-ddpm-vs-nsf)
SEED_CASES = [("ddpm (seed 000)", "mnist-flow-vs-ddpm", "ddpm"), ("resflow (seed 000)", "mnist-flow-vs-ddpm", "resflow"),
              ("daf (seed 001)", "mnist-daf-vs-ddpm-vs-nsf", "daf"), ("nsf (seed 001)", "mnist-daf-vs-ddpm-vs-nsf", "nsf")]
DEFAULT_CASES = ["glow", "cfm", "ot-cfm", "dcgan", "iddpm", "ncsn"]  # no seed configures them: wrapper defaults
COMPILED = {"ddpm (seed 000)", "resflow (seed 000)", "daf (seed 001)"}  # compile is minutes per model: the main ones
# Published dense peaks (no sparsity), for the MFU column next to the measured one.
SPEC_PEAK_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0},
                    "A100": {"bf16": 312.0, "fp32": 19.5}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def matmul_peak(device: torch.device, precision: str, n: int) -> float:
    """FLOP/s of an n x n x n matmul in this precision, best of 5 after warm-up (fp32 as torch runs it by default)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def cases(dry: bool, batch: int) -> list[tuple[str, str, dict, int]]:
    """(label, registered model, config, batch size)."""
    out = []
    for label, suite, run in SEED_CASES:
        s = load_suite(suite, "smoke" if dry else "paper")
        cfg = s.models[run]
        out.append((label, cfg["model"], model_config(cfg), batch if dry else int(cfg.get("batch_size", s.train["batch_size"]))))
    for name in DEFAULT_CASES:
        cls = get(name)
        out.append((f"{name} (defaults)", name, dict(cls.tiny) if dry else {}, batch))
    return out


def build(name: str, config: dict, device: torch.device, compiled: bool):
    torch.manual_seed(0)
    model = get(name)(config, MNIST).to(device)
    model.optimizers = model.configure_optimizers()
    if compiled:  # every child module's forward; the wrapper's own Python (loss, optimizer steps) stays eager
        for child, module in list(model.named_children()):
            setattr(model, child, torch.compile(module))
    return model


def random_batch(n: int, device: torch.device, gen: torch.Generator) -> Batch:
    x = torch.randint(0, 256, (n, *MNIST.shape), dtype=torch.uint8, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    return Batch(x, y, torch.Generator(device).manual_seed(1))


def timed(fn, device: torch.device, min_seconds: float, max_calls: int = 200) -> tuple[float, int]:
    """(seconds per call, calls): calls until ``min_seconds`` have passed (after the caller's warm-up)."""
    sync(device)
    t0 = time.perf_counter()
    calls = 0
    while calls < max_calls and (calls == 0 or time.perf_counter() - t0 < min_seconds):
        fn()
        calls += 1
        sync(device)
    return (time.perf_counter() - t0) / calls, calls


def measure(label: str, name: str, config: dict, bs: int, device: torch.device, precision: str, compiled: bool,
            peak: float, seconds: float) -> dict:
    row = {"model": label, "registered": name, "precision": precision, "compiled": compiled, "batch": bs}
    try:
        model = build(name, config, device, compiled)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        batch = random_batch(bs, device, torch.Generator().manual_seed(0))
        step = {"i": 0}

        def train_step():
            with autocast(device, precision):
                model.training_step(batch, step["i"])
            step["i"] += 1

        t_compile = time.perf_counter()
        for _ in range(3):  # warm-up (and compilation)
            train_step()
        sync(device)
        row["warmup_s"] = round(time.perf_counter() - t_compile, 2)
        try:
            with FlopCounterMode(display=False) as counter:
                train_step()
            flops = counter.get_total_flops()
        except RuntimeError as e:  # resflow's in-forward autograd.grad cannot run under the counter
            flops, row["flops_note"] = None, f"not counted: {str(e).splitlines()[0][:120]}"
        per_step, calls = timed(train_step, device, seconds)
        row.update(train_images_per_s=bs / per_step, train_steps_timed=calls, train_flops_per_step=flops,
                   train_mfu=flops / per_step / peak if flops else None)
        model.eval()
        gen = torch.Generator(device)
        n = min(bs, 64)

        def sample():
            with torch.no_grad(), autocast(device, precision):
                model.sample(n, labels=torch.arange(n, device=device) % 10 if model.conditional else None,
                             generator=gen.manual_seed(2))

        sample()
        row["sample_batch"] = n
        row["sample_seconds_per_batch"], _ = timed(sample, device, seconds / 2, max_calls=5)
    except Exception as e:  # one model's failure (out of memory, a compile error) is a row, not the end of the run
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def train_loss_curve(device: torch.device, minutes: float, dry: bool, data_root: str | None) -> dict:
    """The main job's DDPM (seed 000's configuration; tiny under --dry) trained for ``minutes`` on MNIST where the
    files are staged (``--data-root``), else the bundled 8x8 digits upscaled to 32 px; loss logged every 5 %."""
    s = load_suite("mnist-flow-vs-ddpm", "smoke" if dry else "paper")
    cfg = s.models["ddpm"]
    data_cfg = {**s.data}
    try:
        data = load_split(data_cfg, "train", data_root, False)
    except Exception:
        data_cfg = {"dataset": "digits", "image_size": 32, "channels": 1}
        data = load_split(data_cfg, "train", None, False)
    torch.manual_seed(0)
    model = get(cfg["model"])(model_config(cfg), data.spec).to(device)
    model.optimizers = model.configure_optimizers()
    bs = 16 if dry else int(cfg.get("batch_size", s.train["batch_size"]))
    gen, g_cpu = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
    precision = "bf16" if device.type == "cuda" else "fp32"
    losses, t0, step = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < 60 * minutes:
        idx = torch.randint(0, len(data), (bs,), generator=g_cpu)
        batch = Batch(data.x[idx].to(device), data.y[idx].to(device) if data.y is not None else None, gen)
        with autocast(device, precision):
            losses.append(float(model.training_step(batch, step)["loss"]))
        step += 1
    sync(device)
    k = max(1, len(losses) // 20)
    curve = [sum(losses[i:i + k]) / len(losses[i:i + k]) for i in range(0, len(losses), k)]
    return {"model": "ddpm", "config": "seed 000 (paper profile)" if not dry else "smoke", "data": data.name,
            "precision": precision, "batch": bs, "steps": step, "seconds": round(time.perf_counter() - t0, 1),
            "images_per_s": step * bs / (time.perf_counter() - t0), "loss_first": curve[0], "loss_last": curve[-1],
            "loss_curve": [round(v, 5) for v in curve]}


def markdown(result: dict) -> str:
    lines = [f"# gpu check: {result['device_name']}", "",
             f"torch {result['torch']}; measured matmul peak: " + ", ".join(
                 f"{p} {v / 1e12:.1f} TFLOP/s" for p, v in result["peaks"].items()) + ".", "",
             "| model | precision | compiled | batch | train img/s | train MFU (measured peak) | sample s / batch | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        mfu = f"{100 * r['train_mfu']:.1f} %" if r.get("train_mfu") else "—"
        sps = f"{r['sample_seconds_per_batch']:.3f} ({r['sample_batch']})" if r.get("sample_seconds_per_batch") else "—"
        ips = f"{r['train_images_per_s']:.0f}" if r.get("train_images_per_s") else "—"
        lines.append(f"| {r['model']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | {r['batch']} | {ips} | "
                     f"{mfu} | {sps} | {r.get('error', '')} |")
    t = result.get("training")
    if t:
        lines += ["", f"DDPM ({t['config']}, {t['data']}, {t['precision']}, batch {t['batch']}): {t['steps']} steps in "
                      f"{t['seconds']} s ({t['images_per_s']:.0f} img/s); loss {t['loss_first']:.4f} -> {t['loss_last']:.4f}",
                  "", "loss every 5 %: " + ", ".join(f"{v:.4f}" for v in t["loss_curve"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dry", action="store_true",
                   help="tiny sizes, short timings, fp32 eager only: check the script on a CPU")
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--seconds", type=float, default=None, help="timing per case (default 1.5; --dry 0.05)")
    p.add_argument("--train-minutes", type=float, default=None, help="DDPM training (default 3; --dry 0.1)")
    p.add_argument("--deadline-minutes", type=float, default=7.0, help="skip the remaining cases after this long")
    p.add_argument("--data-root", default=None, help="staged MNIST (folder holding MNIST/raw) for the DDPM run")
    a = p.parse_args(argv)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    seconds = a.seconds if a.seconds is not None else (0.05 if a.dry else 1.5)
    minutes = a.train_minutes if a.train_minutes is not None else (0.1 if a.dry else 3.0)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    n = 1024 if a.dry else 8192
    variants = [("fp32", False)] if a.dry else [("fp32", False), ("bf16", False), ("bf16", True)]
    peaks = {prec: matmul_peak(device, prec, n) for prec in sorted({p for p, _ in variants})}
    result = {"device_name": name, "torch": torch.__version__, "peaks": peaks,
              "spec_peak_tflops": next((v for k, v in SPEC_PEAK_TFLOPS.items() if k in name), None), "rows": []}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = 60 * a.deadline_minutes - 60 * minutes  # keep the training's minutes
    for label, model, cfg, bs in cases(a.dry, 8):
        for precision, compiled in variants:
            if compiled and label not in COMPILED:
                continue
            if time.perf_counter() - start > budget:
                result["rows"].append({"model": label, "registered": model, "precision": precision, "compiled": compiled,
                                       "batch": bs, "error": "skipped: the run's deadline"})
                continue
            row = measure(label, model, cfg, bs, device, precision, compiled, peaks[precision], seconds)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            (out / "gpu_check.json").write_text(json.dumps(result, indent=1))  # partial results survive a timeout
    result["training"] = train_loss_curve(device, minutes, a.dry, a.data_root)
    result["seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
