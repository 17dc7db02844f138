"""Sample-quality metrics through torch-fidelity: FID, IS, KID, precision/recall.

Suites name them in ``eval.metrics``:

======================  ================================================  =========================
metric                  record keys                                       torch-fidelity function
======================  ================================================  =========================
``fid``                 ``fid``                                           fid_statistics_to_metric
``is``                  ``is``                                            isc_features_to_metric
``kid``                 ``kid``                                           kid_features_to_metric
``precision_recall``    ``precision``, ``recall`` (alias ``prc``)         prc_features_to_metric
======================  ================================================  =========================

How they are computed (recorded in every value's ``protocol``):

- generated images: ``eval.num_samples`` per repeat; repeat 0 is the evaluation's shared sample set
  (``ctx.samples()``, also used by class coverage), repeat r > 0 is ``ctx.draw(n, offset=1000 + r)``.
  ``eval.repeats`` > 1 reports mean ± std (sample std, ddof=1) over repeats.
- samples are converted to uint8 with :func:`bench.conventions.to_uint8` before feature extraction
  (as the reference implementations do); grey images are replicated to 3 channels.
- real images: the evaluation split (``eval.num_real`` first images, 0 = all), already uint8.
- features: :mod:`bench.metrics.extractors` (``eval.feature_extractor``), fp32, batch 256.
- reference statistics (features and mean/covariance of the real images) are cached under
  ``<cache_dir>/reference/`` keyed by dataset, split, image count, a hash of the pixels,
  the preprocessing and the extractor with its weights' hash; a second evaluation reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.conventions import to_uint8
from bench.errors import BenchError
from bench.metrics import EvalContext, Output, metric, value
from bench.metrics.extractors import Extractor, get_extractor, tensor_sha1, torch_save_atomic

FEATURE_BATCH = 256
REFERENCE_VERSION = 1  # bump when the cached layout or preprocessing code changes
PREPROCESSING = {"real": "uint8 as stored", "generated": "to_uint8: floor(clamp(x,0,1)*255+0.5)",
                 "grey": "replicated to 3 channels"}
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_NEIGHBORHOOD = 3
ISC_SPLITS = 10


def numpy_single_thread():
    """Run the numpy parts (eigvals, kernels) on one BLAS thread: with torch's OpenMP workers still
    spinning, multi-threaded OpenBLAS on a few cores was measured ~10x slower (3.5 s vs 0.05 s for a
    192-d eigvals on 2 cores)."""
    import threadpoolctl

    return threadpoolctl.threadpool_limits(1, user_api="blas")


def _tf_version() -> str:
    import torch_fidelity

    return torch_fidelity.__version__


# ---- reference statistics of the real data (disk cache) -----------------------------------------

def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.double())


def reference_key(ctx: EvalContext, ext: Extractor, real_x: torch.Tensor) -> tuple[str, dict[str, Any]]:
    desc = {"dataset": ctx.dataset.get("dataset"), "image_size": ctx.dataset.get("image_size"),
            "channels": ctx.dataset.get("channels"), "split": ctx.real.name, "count": int(len(real_x)),
            "pixels_sha1": tensor_sha1(real_x), "preprocessing": PREPROCESSING, "extractor": ext.name,
            "weights_sha256": ext.weights_sha256, "layers": list(ext.module.features_list),
            "resize": ext.resize, "version": REFERENCE_VERSION}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20], desc


def _extract_real(ext: Extractor, x: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """Features of the real images (a separate function so tests can count calls)."""
    return ext.features(x, device, FEATURE_BATCH)


def reference(ctx: EvalContext, ext: Extractor) -> dict[str, Any]:
    """{"features": {layer: [N, D]}, "mu", "sigma", "count", "cache": "hit"|"miss", "path"} of the real split."""
    state = _state(ctx)
    mem_key = ("reference", ext.name, ext.weights_sha256)
    if mem_key in state:
        return state[mem_key]
    n_real = int(ctx.eval_cfg.get("num_real") or 0) or len(ctx.real)
    real_x = ctx.real.x[:n_real]
    key, desc = reference_key(ctx, ext, real_x)
    folder = Path(ctx.cache_dir) / "reference"
    path = folder / f"{desc['dataset']}-{ext.name}-{key}.pt"
    ref = None
    if path.is_file():
        try:
            ref = torch.load(path, map_location="cpu", weights_only=True)
            ref["cache"] = "hit"
        except Exception:  # a truncated/corrupt cache file is recomputed
            ref = None
    if ref is None:
        feats = _extract_real(ext, real_x, ctx.device)
        with numpy_single_thread():
            stats = fid_statistics(feats[ext.feature_layer])
        ref = {"features": feats, "mu": torch.from_numpy(stats["mu"]), "sigma": torch.from_numpy(stats["sigma"]),
               "count": len(real_x), "desc": json.dumps(desc, sort_keys=True)}
        torch_save_atomic(ref, path)
        ref = dict(ref, cache="miss")
    ref["path"] = str(path)
    state[mem_key] = ref
    return ref


# ---- generated features (shared by the metrics of one evaluation) -------------------------------

def _state(ctx: EvalContext) -> dict:
    return ctx.__dict__.setdefault("_fidelity_state", {})


def repeats(ctx: EvalContext) -> int:
    r = int(ctx.eval_cfg.get("repeats") or 1)
    if r < 1:
        raise BenchError(f"eval.repeats must be >= 1, got {r}")
    return r


def generated(ctx: EvalContext, r: int):
    """Samples of repeat ``r`` (repeat 0 = the evaluation's shared set)."""
    state = _state(ctx)
    if ("samples", r) not in state:
        state[("samples", r)] = ctx.samples() if r == 0 else ctx.draw(int(ctx.eval_cfg["num_samples"]), offset=1000 + r)
    return state[("samples", r)]


def generated_features(ctx: EvalContext, ext: Extractor, r: int) -> dict[str, torch.Tensor]:
    state = _state(ctx)
    key = ("features", ext.name, ext.weights_sha256, r)
    if key not in state:
        s = generated(ctx, r)
        real_shape = tuple(ctx.real.x.shape[-2:])
        if tuple(s.images.shape[-2:]) != real_shape:
            raise BenchError(f"samples are {tuple(s.images.shape[-2:])} px but the real images {real_shape} px")
        state[key] = ext.features(to_uint8(s.images), ctx.device, FEATURE_BATCH)
    return state[key]


def protocol(ctx: EvalContext, ext: Extractor, ref: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    s = generated(ctx, 0)
    info = {f"sample_{k}": v for k, v in s.info.items() if isinstance(v, (int, float, str, bool))}
    out = {**ext.protocol(), "library": f"torch-fidelity {_tf_version()}", "generated": len(s.images),
           "repeats": repeats(ctx), "uint8": PREPROCESSING["generated"], "grey_to_rgb": ctx.real.x.shape[1] == 1,
           "sampler": dict(ctx.sampler), "nfe": s.nfe, "precision": ctx.precision, "device": str(ctx.device),
           "feature_batch": FEATURE_BATCH, **info}
    if ref is not None:
        out.update(real_split=ctx.real.name, real_count=int(ref["count"]), reference_cache=ref["cache"])
    out.update(extra)
    return out


def _summary(values: list[float], single_std: float | None) -> tuple[float, float | None, str]:
    """(mean, std, what the std is) over repeats; one repeat: the metric's own spread, if any."""
    if len(values) > 1:
        return float(np.mean(values)), float(np.std(values, ddof=1)), f"std over {len(values)} repeats (ddof=1)"
    return float(values[0]), single_std, ""


# ---- the metrics ----------------------------------------------------------------------------------

def frechet_distance(gen_features: torch.Tensor, ref: dict[str, Any]) -> float:
    """FID of generated features against cached reference statistics (torch-fidelity's formula)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    with numpy_single_thread():
        stats = fid_statistics(gen_features)
        real = {"mu": ref["mu"].numpy(), "sigma": ref["sigma"].numpy()}
        return float(fid_statistics_to_metric(stats, real, verbose=False)[KEY_METRIC_FID])


@metric("fid", reads_samples=True, needs_extractor=True,
        outputs={"fid": Output("lower", column="FID", feature_space=True)})
def fid(ctx: EvalContext) -> dict:
    ext = get_extractor(ctx)
    ref = reference(ctx, ext)
    vals = [frechet_distance(generated_features(ctx, ext, r)[ext.feature_layer], ref) for r in range(repeats(ctx))]
    mean, std, std_of = _summary(vals, None)
    return {"fid": value(mean, std=std, n=len(vals), **protocol(ctx, ext, ref, std_of=std_of or None, per_repeat=vals))}


def inception_score(logits: torch.Tensor, splits: int = ISC_SPLITS) -> tuple[float, float]:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(logits, splits=max(1, min(splits, len(logits))), shuffle=True, rng_seed=2020)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


@metric("is", reads_samples=True, needs_extractor=True,
        outputs={"is": Output("higher", column="IS", feature_space=True)})
def inception_score_metric(ctx: EvalContext) -> dict:
    ext = get_extractor(ctx)
    if ext.logits_layer is None:
        why = (f"the {ext.name} weights {Path(ext.weights_path).name} have no logits layer (pool3 only); IS needs "
               "torch-fidelity's full Inception weights") if ext.name.startswith("inception") else (
               f"the {ext.name} feature space has no class logits; IS is defined on Inception's")
        return {"is": value(None, note=f"not defined: {why}", **ext.protocol())}
    res = [inception_score(generated_features(ctx, ext, r)[ext.logits_layer]) for r in range(repeats(ctx))]
    mean, std, std_of = _summary([m for m, _ in res], res[0][1])
    return {"is": value(mean, std=std, n=len(res), **protocol(
        ctx, ext, None, logits_layer=ext.logits_layer, splits=ISC_SPLITS,
        std_of=std_of or f"std over {ISC_SPLITS} splits (torch-fidelity)", per_repeat=[m for m, _ in res]))}


def kernel_inception_distance(gen: torch.Tensor, real: torch.Tensor) -> tuple[float, float, int]:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(KID_SUBSET_SIZE, len(gen), len(real))
    with numpy_single_thread():
        out = kid_features_to_metric(gen, real, kid_subsets=KID_SUBSETS, kid_subset_size=size, verbose=False,
                                     rng_seed=2020)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), size


@metric("kid", reads_samples=True, needs_extractor=True,
        outputs={"kid": Output("lower", column="KID", feature_space=True)})
def kid(ctx: EvalContext) -> dict:
    ext = get_extractor(ctx)
    ref = reference(ctx, ext)
    real = ref["features"][ext.feature_layer]
    res = [kernel_inception_distance(generated_features(ctx, ext, r)[ext.feature_layer], real)
           for r in range(repeats(ctx))]
    mean, std, std_of = _summary([m for m, _, _ in res], res[0][1])
    return {"kid": value(mean, std=std, n=len(res), **protocol(
        ctx, ext, ref, kid_subsets=KID_SUBSETS, kid_subset_size=res[0][2], kernel="poly degree 3",
        std_of=std_of or f"std over {KID_SUBSETS} subsets (torch-fidelity)", per_repeat=[m for m, _, _ in res]))}


def precision_recall(gen: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    out = prc_features_to_metric(gen, real, prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=10000,
                                 save_cpu_ram=len(gen) * len(real) > 10_000 * 10_000, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


@metric("precision_recall", aliases=("prc",), reads_samples=True, needs_extractor=True, outputs={
    "precision": Output("higher", column="precision", feature_space=True),
    "recall": Output("higher", column="recall", feature_space=True),
})
def precision_recall_metric(ctx: EvalContext) -> dict:
    ext = get_extractor(ctx)
    ref = reference(ctx, ext)
    real = ref["features"][ext.feature_layer]
    res = [precision_recall(generated_features(ctx, ext, r)[ext.feature_layer], real) for r in range(repeats(ctx))]
    p_mean, p_std, std_of = _summary([p for p, _ in res], None)
    r_mean, r_std, _ = _summary([r for _, r in res], None)
    proto = protocol(ctx, ext, ref, neighborhood_k=PRC_NEIGHBORHOOD, std_of=std_of or None,
                     method="Kynkaanniemi et al. 2019 (torch-fidelity)")
    return {"precision": value(p_mean, std=p_std, n=len(res), **proto),
            "recall": value(r_mean, std=r_std, n=len(res), **proto)}

