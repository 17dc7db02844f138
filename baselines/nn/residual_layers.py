"""The contractive residual flow's layers (Chen et al. 2019; seed 000's CRF), on the API of
:mod:`baselines.nn.flow_layers`: ``layer(x, generator=None) -> (y, logdet)``, ``layer.inverse(y) -> x``.

:class:`LipSwish`, :class:`SNConv2d` (spectral normalisation of the convolution *operator* to a Lipschitz
coefficient), :class:`ResidualNet`, :class:`ResidualBlock` (power-series log-det, Hutchinson trace estimator,
Russian-roulette truncation, Neumann-series gradient with the memory-efficient log-det, brute-force mode,
fixed-point inverse) and :class:`ResidualFlow`: ``forward(y) -> (z, logdet)`` with ``z`` of shape
``ResidualFlow.latent_shape(C, H, W)`` (after the squeezes, no factor-out); ``inverse(z)`` runs the fixed-point
iterations and records them in ``last_inverse_iterations``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.nn.flow_layers import ActNorm, FlowLayer, FlowSequential, Squeeze, _hi, _no_autocast
from bench import conventions


class LipSwish(nn.Module):
    """x * sigmoid(beta x) / 1.1 with beta = softplus(b) learned: 1-Lipschitz (Chen et al. 2019)."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        # in place where autograd allows (sigmoid keeps its output, mul its inputs): two fewer activation-sized
        # allocations per call, which is most of the allocator churn of a residual flow's training step. Measured and
        # dropped: custom Functions that keep less for backward, (a) x only, recomputing the sigmoid (larger
        # double-backward graph: the peak rose and the step slowed), (b) the outputs y and sigmoid(beta x) only,
        # deriving in those (a third less activation memory, but its backward takes 2.2x the elementwise passes
        # of autograd's, which prunes the beta gradient from the Neumann series' input-only products: the step slowed ~25 %)
        return (x * torch.sigmoid_(x * F.softplus(self.b))).div_(1.1)


class SNConv2d(nn.Conv2d):
    """Conv2d whose operator 2-norm is kept <= ``coeff`` (W / max(1, sigma/coeff)).

    sigma is the spectral norm of the convolution as a linear map on the input's shape (not of the
    reshaped kernel), estimated by power iteration with conv / conv-transpose, warm-started from
    stored vectors: ``n_iterations`` steps per training forward (``init_iterations`` on the first),
    none in eval mode (the stored estimate is used, so evaluation is deterministic). A 1x1 convolution
    acts on every pixel alike, so its operator norm is that of the C_out x C_in matrix and the iteration
    runs on one pixel (C x 1 x 1 vectors) instead of the whole map: the same sigma, H*W times cheaper.
    """

    def __init__(self, cin, cout, kernel_size, coeff=0.98, n_iterations=1, init_iterations=50):
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2)
        self.coeff, self.n_iterations, self.init_iterations = coeff, n_iterations, init_iterations
        self.register_buffer("u", torch.empty(0))
        self.register_buffer("v", torch.empty(0))
        self.register_buffer("sigma", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # u and v take the input's shape on the first forward; a fresh module (resume, a loaded checkpoint) takes
        # the saved vectors' shape instead of refusing them
        for name in ("u", "v"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _vector_shape(self, x_shape) -> tuple[int, ...]:
        """The shape (without batch) the power iteration runs on: one pixel for a 1x1 kernel, else the input's."""
        return (x_shape[1], 1, 1) if self.kernel_size == (1, 1) else tuple(x_shape[1:])

    @torch.no_grad()
    def _power_iteration(self, x_shape, iters):
        w = self.weight
        shape = self._vector_shape(x_shape)
        if self.v.numel() == 0 or self.v.shape[1:] != shape:
            v = torch.randn(1, *shape, device=w.device, dtype=w.dtype)
            self.v = v / v.norm()
            self.u = F.conv2d(self.v, w, padding=self.padding)
            iters = max(iters, self.init_iterations)
        u, v = self.u, self.v
        for _ in range(iters):
            v = F.conv_transpose2d(u, w, padding=self.padding)
            v = v / (v.norm() + 1e-12)
            u = F.conv2d(v, w, padding=self.padding)
            u = u / (u.norm() + 1e-12)
        self.u.copy_(u), self.v.copy_(v)

    def normalized_weight(self, x_shape) -> torch.Tensor:
        needs_init = self.v.numel() == 0 or self.v.shape[1:] != self._vector_shape(x_shape)
        if self.training or needs_init:
            self._power_iteration(tuple(x_shape), self.n_iterations if self.training else 0)
        with _no_autocast(self.weight):
            # sigma = <u, conv(v, W)> is linear in W, so it equals <W, G> with G its gradient in W, taken without a
            # graph: autograd then keeps one weight-sized tensor per conv instead of map-sized copies of u, v and
            # conv(v, W) (about 2 % of a seed-000 training step's peak memory)
            with torch.no_grad():
                # (the stored vectors may be bf16: an autocast first forward sized them)
                w_dtype = self.weight.dtype
                g_w = torch.nn.grad.conv2d_weight(self.v.to(w_dtype), self.weight.shape, self.u.to(w_dtype),
                                                  padding=self.padding)
            sigma = (self.weight * g_w).sum()
            if self.training:
                self.sigma.copy_(sigma.detach())
            factor = torch.clamp(sigma / self.coeff, min=1.0)
            return self.weight / factor

    @torch.no_grad()
    def operator_norm(self, x_shape, iters=500) -> float:
        """A tightly converged sigma of the normalized operator (for tests / diagnostics)."""
        w = self.normalized_weight(x_shape)
        v = torch.randn(1, *x_shape[1:], dtype=w.dtype, device=w.device)
        for _ in range(iters):
            u = F.conv2d(v, w, padding=self.padding)
            v = F.conv_transpose2d(u, w, padding=self.padding)
            v = v / v.norm()
        return float(F.conv2d(v, w, padding=self.padding).norm())

    def forward(self, x):
        return F.conv2d(x, self.normalized_weight(x.shape), self.bias, padding=self.padding)


class ResidualNet(nn.Module):
    """g(x): LipSwish -> 3x3 SNConv -> LipSwish -> 1x1 SNConv -> LipSwish -> 3x3 SNConv (Lip(g) <= coeff)."""

    def __init__(self, channels, hidden, coeff=0.98, n_iterations=1):
        super().__init__()
        self.net = nn.Sequential(
            LipSwish(), SNConv2d(channels, hidden, 3, coeff, n_iterations),
            LipSwish(), SNConv2d(hidden, hidden, 1, coeff, n_iterations),
            LipSwish(), SNConv2d(hidden, channels, 3, coeff, n_iterations))

    def forward(self, x):
        return self.net(x)


class _MemoryEfficientLogDet(torch.autograd.Function):
    """g(x) and the log-det estimate of a residual block, with the log-det's gradient (w.r.t. x and g's
    parameters) computed in the forward pass, as Chen et al.'s ``--mem-eff``: the double-backward graph of the
    Neumann surrogate lives only inside forward, and backward scales the stored gradient by the upstream
    one. The parameter part assumes every image's log-det has the same upstream gradient (a batch mean or sum,
    as every flow loss here); backward checks that and says so when it does not hold."""

    @staticmethod
    def forward(ctx, block, generator, x, *params):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            g = block.g(xg)
            value, surrogate = block._series(g, xg, generator, train=True)
            # retain_graph: g's own graph is still needed for the gradient through y = x + g(x)
            grads = torch.autograd.grad(surrogate.sum(), (xg, *params), retain_graph=True, allow_unused=True)
        ctx.g, ctx.xg, ctx.params, ctx.logdet_grads = g, xg, params, grads
        return g.detach(), value.detach()

    @staticmethod
    def backward(ctx, grad_g, grad_value):
        g, xg, params = ctx.g, ctx.xg, ctx.params
        ld_x, *ld_params = ctx.logdet_grads
        with torch.enable_grad():
            d_x, *d_params = torch.autograd.grad(g, (xg, *params), grad_g, allow_unused=True)
        if grad_value is None:
            grad_value = torch.zeros(xg.shape[0], device=xg.device, dtype=ld_x.dtype if ld_x is not None else xg.dtype)
        w0 = grad_value[:1]
        if not torch.allclose(grad_value, w0.expand_as(grad_value), rtol=1e-5, atol=1e-12):
            raise RuntimeError("resflow memory_efficient=true needs a loss that weights every image's log-det equally "
                               "(a batch mean or sum); set memory_efficient = false for any other weighting")
        shape = (-1,) + (1,) * (xg.dim() - 1)
        grad_x = d_x if d_x is not None else torch.zeros_like(xg)
        if ld_x is not None:
            grad_x = grad_x + ld_x * grad_value.view(shape).to(ld_x.dtype)
        grad_params = []
        for dp, lp in zip(d_params, ld_params):
            if lp is not None:
                lp = lp * w0.to(lp.dtype).squeeze(0)
                dp = lp if dp is None else dp + lp
            grad_params.append(dp)
        ctx.g = ctx.xg = ctx.logdet_grads = None  # free the graph and the stored gradients
        return (None, None, grad_x, *grad_params)


class ResidualBlock(FlowLayer):
    """y = x + g(x) with Lip(g) < 1 (i-ResNet / Residual Flow).

    log|det(I + J_g)| = sum_k (-1)^(k+1)/k tr(J_g^k), estimated with a Hutchinson vector v ~ N(0, I)
    and Russian-roulette truncation: N = n_exact + Geometric(geom_p) terms, term k weighted by
    1/P(N >= k), which makes the estimate unbiased. In training mode with ``neumann_grad`` the
    gradient comes from the Neumann series v^T [sum_k (-1)^k J^k / P(N >= k)] dJ v (the power series
    is evaluated without a graph, so memory does not grow with N); the returned value is still the
    unbiased log-det estimate. With ``memory_efficient`` (the default, Chen et al.'s ``--mem-eff``) that
    gradient is taken during the forward pass and its double-backward graph freed at once
    (:class:`_MemoryEfficientLogDet`); the result is the same gradient. ``mode`` (set on the module): "estimate" (default) or "exact"
    (brute-force log|det(I + J)| from the full Jacobian; small inputs only).
    """

    def __init__(self, net: nn.Module, n_exact_terms=2, n_exact_terms_eval=20, geom_p=0.5, neumann_grad=True,
                 fixed_point_atol=1e-5, fixed_point_rtol=1e-5, fixed_point_max_iters=500, memory_efficient=True):
        super().__init__()
        self.g = net
        self.n_exact_terms, self.n_exact_terms_eval = n_exact_terms, n_exact_terms_eval
        self.geom_p, self.neumann_grad, self.memory_efficient = geom_p, neumann_grad, memory_efficient
        self.atol, self.rtol, self.max_iters = fixed_point_atol, fixed_point_rtol, fixed_point_max_iters
        self.mode = "estimate"
        self.last_inverse_iterations = 0
        self.last_inverse_converged = True

    # -- log-det -------------------------------------------------------------------------------
    def _num_terms(self, generator, device):
        n_exact = self.n_exact_terms if self.training else self.n_exact_terms_eval
        # drawn where the generator lives and read as a float there: moving the scalar to a GPU first would cost a
        # device sync per block per step
        u = torch.rand((), generator=generator, device=device if generator is None else generator.device)
        geom = 1 + int(math.floor(math.log(max(float(u), 1e-300)) / math.log(1.0 - self.geom_p)))  # >= 1
        return n_exact, n_exact + geom

    def coeff(self, k: int, n_exact: int) -> float:
        """1 / P(N >= k) for N = n_exact + Geometric(p) (support 1, 2, ...)."""
        return 1.0 if k <= n_exact else (1.0 - self.geom_p) ** -(k - n_exact - 1)

    def _exact_logdet(self, x):
        d = x[0].numel()
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        out = []
        with torch.enable_grad():
            for xi in x:
                jac = torch.autograd.functional.jacobian(
                    lambda t: self.g(t.view(1, *x.shape[1:])).flatten(), xi.detach().flatten(),
                    create_graph=self.training and torch.is_grad_enabled(), vectorize=True)
                out.append(torch.linalg.slogdet(eye + jac)[1])
        return _hi(torch.stack(out))

    def _series(self, g, xg, generator, train):
        """The Russian-roulette log-det estimate of one Hutchinson draw, and (training with ``neumann_grad``) the
        Neumann surrogate whose gradient is the estimator's gradient (its value is 0 in the forward sense)."""
        v = conventions.draw(torch.randn, xg.shape, generator=generator, device=xg.device).to(g.dtype)
        n_exact, n_terms = self._num_terms(generator, xg.device)
        w, value, neumann = v, torch.zeros(xg.shape[0], device=xg.device, dtype=_hi(g).dtype), v
        for k in range(1, n_terms + 1):
            w = torch.autograd.grad(g, xg, w, retain_graph=True)[0].detach()
            c = self.coeff(k, n_exact)
            value = value + (-1) ** (k + 1) / k * c * _hi((w * v).flatten(1).sum(1))
            if train:
                neumann = neumann + (-1) ** k * c * w
        if not train:
            return value, None
        surrogate = _hi((torch.autograd.grad(g, xg, neumann, create_graph=True)[0] * v).flatten(1).sum(1))
        return value, surrogate - surrogate.detach()

    def forward(self, x, generator=None):
        if self.mode == "exact":
            return x + self.g(x), self._exact_logdet(x)
        train = self.training and torch.is_grad_enabled()
        if train and self.neumann_grad and self.memory_efficient:
            params = [p for p in self.g.parameters() if p.requires_grad]
            g, value = _MemoryEfficientLogDet.apply(self, generator, x, *params)
            return x + g, value
        if not train:
            y = x + self.g(x)
        with torch.enable_grad():
            xg = x if (train and x.requires_grad) else x.detach().requires_grad_(True)
            g = self.g(xg)
            if train:
                y = xg + g
            if train and not self.neumann_grad:  # plain power series, differentiated through every term
                v = conventions.draw(torch.randn, x.shape, generator=generator, device=x.device).to(g.dtype)
                n_exact, n_terms = self._num_terms(generator, x.device)
                w, value = v, torch.zeros(x.shape[0], device=x.device, dtype=_hi(g).dtype)
                for k in range(1, n_terms + 1):
                    w = torch.autograd.grad(g, xg, w, create_graph=True)[0]
                    value = value + (-1) ** (k + 1) / k * self.coeff(k, n_exact) * _hi((w * v).flatten(1).sum(1))
                return y, value
            value, surrogate = self._series(g, xg, generator, train)
            if train:  # Neumann-series gradient estimator; value unchanged
                return y, value + surrogate
        return y, value.detach()

    # -- inverse -------------------------------------------------------------------------------
    @torch.no_grad()
    def inverse(self, y):
        """Fixed point x = y - g(x), stopped when every |x_k - x_{k-1}| <= atol + rtol |y| (float32)."""
        with _no_autocast(y):
            y = y.float() if y.dtype != torch.float64 else y
            tol = self.atol + self.rtol * y.abs()
            x = y - self.g(y)
            it, done = 1, False
            while it < self.max_iters:
                x_new = y - self.g(x)
                it += 1
                done = bool(((x_new - x).abs() <= tol).all())
                x = x_new
                if done:
                    break
        self.last_inverse_iterations = it
        self.last_inverse_converged = done  # False: stopped at max_iters, the sample is not an exact inverse
        return x


class ResidualFlow(nn.Module):
    """Seed 000's CRF: [Squeeze ->] n x (ActNorm -> ResidualBlock -> ActNorm) per scale, no factor-out.

    ``blocks_per_scale=(16, 16, 16)`` gives 16 blocks, then [squeeze -> 16 blocks] x 2.
    """

    def __init__(self, in_channels: int, blocks_per_scale: Sequence[int] = (16, 16, 16), hidden_channels: int = 512,
                 coeff: float = 0.98, actnorm: bool = True, sn_iterations: int = 1, **block_kwargs):
        super().__init__()
        layers, c = [], in_channels
        for i, n in enumerate(blocks_per_scale):
            if i > 0:
                layers.append(Squeeze())
                c *= 4
            for _ in range(n):
                if actnorm:
                    layers.append(ActNorm(c))
                layers.append(ResidualBlock(ResidualNet(c, hidden_channels, coeff, sn_iterations), **block_kwargs))
                if actnorm:
                    layers.append(ActNorm(c))
        self.chain = FlowSequential(layers)
        self.num_squeezes = len(blocks_per_scale) - 1

    def latent_shape(self, c, h, w):
        f = 2 ** self.num_squeezes
        return (c * f * f, h // f, w // f)

    def residual_blocks(self):
        return [m for m in self.chain.layers if isinstance(m, ResidualBlock)]

    def set_logdet_mode(self, mode: str):
        if mode not in ("estimate", "exact"):
            raise ValueError(f"unknown log-det mode {mode!r}; use 'estimate' or 'exact'")
        for b in self.residual_blocks():
            b.mode = mode

    def forward(self, y, generator=None):
        return self.chain(y, generator)

    def inverse(self, z):
        return self.chain.inverse(z)

    @property
    def last_inverse_iterations(self) -> list[int]:
        return [b.last_inverse_iterations for b in self.residual_blocks()]

    @property
    def last_inverse_unconverged(self) -> int:
        """How many blocks of the last inverse stopped at ``max_iters`` above the tolerance."""
        return sum(not b.last_inverse_converged for b in self.residual_blocks())
