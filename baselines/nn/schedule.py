"""The project's one discrete-time Gaussian diffusion module (Ho et al. 2020; Nichol & Dhariwal 2021; Song et al. 2021).

API
---
- ``make_betas(kind, T, beta_start=1e-4, beta_end=0.02, cosine_s=0.008)``: "linear" or "cosine" beta_t.
- ``Schedule(betas, timestep_map=None)``: all closed-form quantities (float64 on the CPU, cached per device
  as float32 when gathered). Index ``t`` runs over 0..T-1 (paper step t+1).
  * ``q_mean_var(x0, t)`` / ``q_sample(x0, t, noise)``: q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I).
  * ``q_posterior(x0, xt, t)``: mean, variance, clipped log-variance of q(x_{t-1} | x_t, x_0).
  * ``p_mean_var(out, xt, t, variance, clip)``: reverse step p(x_{t-1} | x_t) from an eps-model output;
    ``variance`` is "fixedlarge" (beta_t), "fixedsmall" (posterior beta~_t) or "learned" (out has 2C channels,
    the second half v in [-1, 1] interpolates log-variances: log s^2 = f log beta_t + (1 - f) log beta~_t,
    f = (v + 1) / 2, as Nichol & Dhariwal).
  * ``vb_term(out, x0, xt, t, variance)``: per-image nats of L_{t} (KL to the posterior for t > 0; for t = 0
    the discretized Gaussian decoder -log p(x0 | x1) on 8-bit data scaled to [-1, 1]).
    ``prior_kl(x0)``: KL(q(x_T | x0) || N(0, I)) per image.
  * ``vlb(model_fn, x0, variance, generator)``: the full bound, all T terms + prior, per image in nats.
  * ``respace(timesteps)``: the schedule restricted to a subsequence (alphas-bar kept, betas recomputed),
    ``timestep_map`` maps its indices to the original model timesteps.
- ``spacing(kind, T, S)``: timestep subsequences: "uniform" (DDIM code: range(0, T, T // S), which can give
  a few more than S steps when S does not divide T), "linspace" (round(linspace(0, T-1, S)), = iDDPM's
  respacing), "leading" (floor(arange(0, T, T / S)), Lin et al. 2023), "trailing" (round(arange(T, 0, -T/S)) - 1),
  "quadratic" (DDIM: (linspace(0, sqrt(0.8 T), S) ** 2).astype(int), duplicates removed).
- ``ancestral_sample(model_fn, schedule, shape, ...)`` and ``ddim_sample(model_fn, schedule, shape, eta, ...)``:
  samplers over a (respaced) schedule, returning ``(x, nfe)`` where nfe counts model_fn calls per sample.

Why not diffusers' schedulers: they sample (tests/benchmarks/test_bench_diffusion.py times them beside these,
including the per-step update alone at a small size), but bits/dim needs the variational bound -- every KL term, the discretized decoder and the
prior term, with learned variances -- which they do not compute; one module here serves DDPM, iDDPM, DAF's
latent diffusion and the benchmark alike, with the same closed forms the tests check against brute force.

``model_fn(x, t_model)`` receives the ORIGINAL timestep (``schedule.timestep_map[i]``) as a long tensor [N],
and returns eps (C channels) or eps and v (2C channels, learned variance).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from bench.conventions import draw

VARIANCES = ("fixedlarge", "fixedsmall", "learned")
SPACINGS = ("uniform", "linspace", "leading", "trailing", "quadratic")


def make_betas(kind: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02, cosine_s: float = 0.008,
               max_beta: float = 0.999) -> torch.Tensor:
    """beta_1..beta_T as float64. 'linear' (Ho et al.) or 'cosine' (Nichol & Dhariwal, clipped at max_beta)."""
    if int(T) < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, int(T), dtype=torch.float64)
    if kind == "cosine":
        def f(t):
            return math.cos((t / T + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(int(T))], dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {kind!r}; use 'linear' or 'cosine'")


def spacing(kind: str, T: int, S: int) -> list[int]:
    """Ascending subsequence of {0..T-1} with (about) S elements; see the module docstring."""
    S, T = int(S), int(T)
    if not 1 <= S <= T:
        raise ValueError(f"number of sampling steps must be in 1..{T}, got {S}")
    if kind == "uniform":
        seq = list(range(0, T, max(T // S, 1)))
    elif kind == "linspace":
        seq = np.round(np.linspace(0, T - 1, S)).astype(int).tolist()
    elif kind == "leading":
        seq = np.floor(np.arange(0, T, T / S)).astype(int).tolist()[:S]
    elif kind == "trailing":
        seq = (np.round(np.arange(T, 0, -T / S)).astype(int) - 1).tolist()[::-1]
    elif kind == "quadratic":
        seq = (np.linspace(0, np.sqrt(T * 0.8), S) ** 2).astype(int).tolist()
    else:
        raise ValueError(f"unknown timestep spacing {kind!r}; use one of {', '.join(SPACINGS)}")
    return sorted(set(int(s) for s in seq))


def randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal draws from ``generator`` (which may live on another device than ``device``)."""
    return draw(torch.randn, shape, generator=generator, device=device)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit data x in [-1, 1] (values k/127.5 - 1) under N(mean, e^{2 log_scale}) integrated over
    each bin of width 2/255, with the edge bins extended to -inf / +inf (Ho et al. 2020). Elementwise, nats."""
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    centered = x - mean
    inv = torch.exp(-log_scale)
    plus = inv * (centered + 1.0 / 255.0)
    minus = inv * (centered - 1.0 / 255.0)
    log_cdf_plus = torch.special.log_ndtr(plus)
    log_sf_minus = torch.special.log_ndtr(-minus)
    # Bin mass Phi(plus) - Phi(minus), computed on the side of the mean where it does not cancel.
    right = centered > 0
    hi = torch.where(right, torch.special.log_ndtr(-minus), log_cdf_plus)
    lo = torch.where(right, torch.special.log_ndtr(-plus), torch.special.log_ndtr(minus))
    log_delta = hi + torch.log1p(-torch.exp((lo - hi).clamp(max=-1e-12)))
    out = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_sf_minus, log_delta))
    return out.float()


class Schedule:
    """Closed-form quantities of a discrete Gaussian diffusion; see the module docstring."""

    def __init__(self, betas: torch.Tensor, timestep_map: Sequence[int] | None = None):
        b = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if b.numel() < 1 or bool((b <= 0).any()) or bool((b >= 1).any()):
            raise ValueError("betas must lie in (0, 1)")
        self.T = int(b.numel())
        self.betas = b
        self.alphas = 1.0 - b
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log1p(-self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: clip its log to beta~_1 (Ho et al.; used only by the t = 0 decoder).
        pv1 = self.posterior_variance[1] if self.T > 1 else b[0]
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv1.view(1), self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = b * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        # "fixedlarge" uses beta_t with beta_1 replaced by beta~_2 so the decoder is well-defined (Ho et al.'s code).
        self.large_log_variance = torch.log(torch.cat([pv1.view(1), b[1:]]))
        self.log_betas = torch.log(b)
        self.timestep_map = torch.as_tensor(list(timestep_map) if timestep_map is not None else range(self.T),
                                            dtype=torch.long)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    # ---- helpers --------------------------------------------------------------------------------
    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        key = (name, str(like.device))
        arr = self._cache.get(key)
        if arr is None:
            arr = self._cache[key] = getattr(self, name).to(device=like.device, dtype=torch.float32)
        return arr[t.to(like.device)].view(-1, *([1] * (like.dim() - 1)))

    def model_t(self, t: torch.Tensor) -> torch.Tensor:
        """Original model timesteps of (respaced) indices t."""
        return self.timestep_map.to(t.device)[t]

    def respace(self, timesteps: Sequence[int]) -> "Schedule":
        """The process restricted to an ascending subsequence of this schedule's indices."""
        ts = sorted(set(int(s) for s in timesteps))
        if not ts or ts[0] < 0 or ts[-1] >= self.T:
            raise ValueError(f"respacing timesteps must lie in 0..{self.T - 1}")
        abar = self.alphas_cumprod[ts]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return Schedule(1.0 - abar / prev, self.timestep_map[ts].tolist())

    # ---- forward process ------------------------------------------------------------------------
    def q_mean_var(self, x0: torch.Tensor, t: torch.Tensor):
        return self._at("sqrt_alphas_cumprod", t, x0) * x0, 1.0 - self._at("alphas_cumprod", t, x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._at("sqrt_alphas_cumprod", t, x0) * x0 + self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        mean = self._at("posterior_mean_coef1", t, xt) * x0 + self._at("posterior_mean_coef2", t, xt) * xt
        return mean, self._at("posterior_variance", t, xt), self._at("posterior_log_variance_clipped", t, xt)

    def eps_to_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self._at("sqrt_recip_alphas_cumprod", t, xt) * xt - self._at("sqrt_recipm1_alphas_cumprod", t, xt) * eps

    def x0_to_eps(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (self._at("sqrt_recip_alphas_cumprod", t, xt) * xt - x0) / self._at("sqrt_recipm1_alphas_cumprod", t, xt)

    # ---- reverse process ------------------------------------------------------------------------
    def model_log_variance(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, variance: str):
        if variance == "fixedlarge":
            return self._at("large_log_variance", t, xt).expand_as(xt)
        if variance == "fixedsmall":
            return self._at("posterior_log_variance_clipped", t, xt).expand_as(xt)
        if variance == "learned":
            v = out[:, xt.shape[1]:].float()
            frac = (v + 1.0) / 2.0
            return frac * self._at("log_betas", t, xt) + (1.0 - frac) * self._at("posterior_log_variance_clipped", t, xt)
        raise ValueError(f"unknown variance {variance!r}; use one of {', '.join(VARIANCES)}")

    def p_mean_var(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, variance: str = "fixedlarge",
                   clip: bool = False) -> dict[str, torch.Tensor]:
        c = xt.shape[1]
        if variance == "learned" and out.shape[1] != 2 * c:
            raise ValueError(f"learned variance needs {2 * c} output channels, got {out.shape[1]}")
        eps = out[:, :c].float()
        x0 = self.eps_to_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, xt, t)
        logvar = self.model_log_variance(out, xt, t, variance)
        return {"mean": mean, "logvar": logvar, "x0": x0, "eps": eps}

    # ---- variational bound ----------------------------------------------------------------------
    def vb_term(self, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                variance: str = "fixedlarge", decoder: str = "discretized") -> torch.Tensor:
        """Per-image nats: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0, -log p(x0|x1) for t = 0.

        ``decoder``: "discretized" (8-bit data in [-1, 1], Ho et al.'s bins) or "continuous" (the Gaussian
        density itself, for continuous data such as a flow's latent)."""
        if decoder not in ("discretized", "continuous"):
            raise ValueError(f"decoder must be 'discretized' or 'continuous', got {decoder!r}")
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        p = self.p_mean_var(out, xt, t, variance)
        kl = normal_kl(true_mean, true_logvar, p["mean"], p["logvar"]).flatten(1).sum(1)
        first = t == 0
        if not bool(first.any()):
            return kl
        if decoder == "continuous":
            nll = 0.5 * (math.log(2 * math.pi) + p["logvar"] + (x0 - p["mean"]) ** 2 * torch.exp(-p["logvar"]))
        else:
            nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["logvar"])
        nll = nll.flatten(1).sum(1)
        return torch.where(first.to(kl.device), nll, kl)

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        t = torch.full((x0.shape[0],), self.T - 1, device=x0.device, dtype=torch.long)
        mean, var = self.q_mean_var(x0, t)
        return normal_kl(mean, torch.log(var), torch.zeros_like(mean), torch.zeros_like(mean)).flatten(1).sum(1)

    def vlb(self, model_fn: Callable, x0: torch.Tensor, variance: str = "fixedlarge",
            generator: torch.Generator | None = None, decoder: str = "discretized") -> dict[str, torch.Tensor]:
        """The whole bound -log p(x0) <= L_T + sum_{t>1} L_{t-1} + L_0, per image in nats (one x_t draw per term)."""
        n = x0.shape[0]
        total = self.prior_kl(x0)
        prior = total.clone()
        for i in range(self.T):
            t = torch.full((n,), i, device=x0.device, dtype=torch.long)
            xt = self.q_sample(x0, t, randn(x0.shape, generator, x0.device))
            total = total + self.vb_term(model_fn(xt, self.model_t(t)).float(), x0, xt, t, variance, decoder)
        return {"total": total, "prior": prior}


# ---- samplers -----------------------------------------------------------------------------------
def ancestral_sample(model_fn: Callable, schedule: Schedule, shape, *, variance: str = "fixedlarge",
                     clip: bool = True, generator: torch.Generator | None = None, device=None,
                     x_T: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """DDPM ancestral sampling over all steps of ``schedule`` (respace it for fewer). Returns (x_0, nfe)."""
    x = x_T if x_T is not None else randn(shape, generator, device)
    n = x.shape[0]
    for i in reversed(range(schedule.T)):
        t = torch.full((n,), i, device=x.device, dtype=torch.long)
        p = schedule.p_mean_var(model_fn(x, schedule.model_t(t)), x, t, variance, clip)
        x = p["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * p["logvar"]) * randn(x.shape, generator, x.device)
    return x, schedule.T


def ddim_sample(model_fn: Callable, schedule: Schedule, shape, *, eta: float = 0.0, clip: bool = True,
                generator: torch.Generator | None = None, device=None,
                x_T: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """DDIM (Song et al. 2021) over all steps of a (respaced) schedule; eta = 0 deterministic, 1 = DDPM-like.

    The schedule is read into Python floats (float64) and the model timesteps into tensors once, before the loop;
    each step's coefficients are then float arithmetic and the update a few fused in-place tensor ops on the batch:
    no per-step gathers or scalar tensors, so the sampler's own cost per
    step stays below diffusers' DDIMScheduler.step (tests/benchmarks/test_bench_diffusion.py measures both)."""
    x = x_T if x_T is not None else randn(shape, generator, device)
    n, c = x.shape[0], x.shape[1]
    abar = schedule.alphas_cumprod.tolist()
    abar_prev = schedule.alphas_cumprod_prev.tolist()
    model_ts = [torch.full((n,), int(s), device=x.device, dtype=torch.long) for s in schedule.timestep_map.tolist()]
    for i in reversed(range(schedule.T)):
        a, ap = abar[i], abar_prev[i]
        recip, recipm1 = math.sqrt(1.0 / a), math.sqrt(1.0 / a - 1.0)  # x0 = recip x - recipm1 eps
        sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        dir_coef = math.sqrt(max(1 - ap - sigma ** 2, 0.0))
        out = model_fn(x, model_ts[i])
        eps = out[:, :c].float()
        scaled = x * recip
        x0 = torch.sub(scaled, eps, alpha=recipm1)
        if clip:
            x0.clamp_(-1.0, 1.0)
            eps = scaled.sub_(x0).div_(recipm1)  # the eps consistent with the clipped x0 (reuses `scaled`)
        x = torch.mul(x0, math.sqrt(ap)).add_(eps, alpha=dir_coef)
        if i > 0 and eta > 0:
            x.add_(randn(x.shape, generator, x.device), alpha=sigma)
    return x, schedule.T
