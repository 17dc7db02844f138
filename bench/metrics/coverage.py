"""Class coverage: the domain classifier labels the generated samples (metric ``class_coverage``).

Record keys (each a value with protocol; repeats average as in :mod:`bench.metrics.fidelity`):

- ``coverage_kl``: KL(histogram of predicted classes || uniform) in nats; 0 = every class equally
  often, log K = a single class. The value dict also carries ``histogram`` (class shares, repeat 0),
  and the protocol ``real_kl``, the same statistic for the real evaluation split, as a yardstick.
- ``coverage_confident``: fraction of samples whose top class probability is >= 0.9
  (low = the model draws ambiguous or mixed digits).
- ``coverage_classes``: number of classes that receive at least half of their uniform share.
- ``coverage_label_accuracy`` (conditional models only): fraction of samples the classifier
  assigns to the label they were conditioned on.

The classifier is the genbench ``digits-classifier`` (:mod:`bench.metrics.extractors`), trained on
the suite's training split and cached; its test accuracy is in every protocol.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.metrics import EvalContext, Output, metric, value
from bench.metrics.extractors import get_extractor
from bench.metrics.fidelity import generated, generated_features, protocol, reference, repeats

CONFIDENCE = 0.9


def class_histogram(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return torch.bincount(pred, minlength=num_classes).double() / max(1, len(pred))


def kl_from_uniform(hist: torch.Tensor) -> float:
    """KL(h || U) = sum_k h_k log(K h_k), in nats (0 log 0 = 0)."""
    k = hist.numel()
    nz = hist[hist > 0]
    return float((nz * torch.log(nz * k)).sum())


def coverage_stats(logits: torch.Tensor, num_classes: int, labels: torch.Tensor | None = None) -> dict[str, float]:
    hist = class_histogram(logits, num_classes)
    probs = logits.double().softmax(dim=1)
    out = {"kl": kl_from_uniform(hist), "confident": float((probs.max(dim=1).values >= CONFIDENCE).double().mean()),
           "classes": float((hist >= 0.5 / num_classes).sum())}
    if labels is not None:
        out["label_accuracy"] = float((logits.argmax(1) == labels.to(logits.device)).double().mean())
    return out


@metric("class_coverage", reads_samples=True, outputs={
    "coverage_kl": Output("lower", column="class-coverage KL"), "coverage_classes": Output("higher"),
    "coverage_label_accuracy": Output("higher"), "coverage_confident": Output(),
})
def class_coverage(ctx: EvalContext) -> dict:
    if ctx.train.y is None or not ctx.train.num_classes:
        return {"coverage_kl": value(None, note=f"not defined: {ctx.train.name} has no class labels")}
    ext = get_extractor(ctx, "digits-classifier")
    k = ctx.train.num_classes
    per = []
    for r in range(repeats(ctx)):
        logits = generated_features(ctx, ext, r)[ext.logits_layer]
        labels = generated(ctx, r).info.get("labels")  # the harness's tensor of requested labels, if any
        per.append(coverage_stats(logits, k, labels if isinstance(labels, torch.Tensor) else None))
    hist = class_histogram(generated_features(ctx, ext, 0)[ext.logits_layer], k)
    ref = reference(ctx, ext)
    real_kl = kl_from_uniform(class_histogram(ref["features"][ext.logits_layer], k))
    proto = protocol(ctx, ext, ref, confidence_threshold=CONFIDENCE, num_classes=k, real_kl=real_kl,
                     kl_max=math.log(k))
    out = {}
    for key in per[0]:
        vals = [p[key] for p in per]
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        out[f"coverage_{key}"] = value(float(np.mean(vals)), std=std, n=len(vals), **proto)
    out["coverage_kl"]["histogram"] = [round(float(h), 6) for h in hist]
    return out

