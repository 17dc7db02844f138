"""baselines/gan.py: DCGAN / conditional DCGAN shapes, which network each step updates, the divergence rule."""

from __future__ import annotations

import pytest
import torch

from bench import registry
from bench.errors import BenchError
from bench.registry import Batch, DataSpec

SMALL = {"g_channels": 8, "d_channels": 8, "latent_dim": 16, "embed_dim": 8}


def make(name, size=16, classes=10, **cfg):
    torch.manual_seed(0)
    return registry.get(name)({**SMALL, **cfg}, DataSpec(1, size, size, classes))


def batch(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Batch(x, y, g)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return [not torch.equal(b, p) for b, p in zip(before, module.parameters())]


@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_each_step_updates_only_its_network(name):
    model = make(name)
    model.optimizers = model.configure_optimizers()
    seen = []

    def grads(module):  # True where a parameter received a non-zero gradient from this backward
        return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]

    def bn_stats(module):
        return [b.clone() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))]

    def hook(loss, opt_name):  # what the harness does, with snapshots around each step
        for p in model.parameters():  # a clean slate, so a gradient seen below comes from this backward
            p.grad = None
        g0, d0, d_bn0 = snapshot(model.generator), snapshot(model.discriminator), bn_stats(model.discriminator)
        opt = model.optimizers[opt_name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        g_grad, d_grad = grads(model.generator), grads(model.discriminator)
        opt.step()
        # D's BN statistics moved between the previous optimizer step and this backward, i.e. by this loss' forward
        d_bn_moved = any(not torch.equal(a, b) for a, b in zip(bn_after_step[-1], d_bn0)) if bn_after_step else None
        bn_after_step.append(bn_stats(model.discriminator))
        seen.append((opt_name, changed(g0, model.generator), changed(d0, model.discriminator), g_grad, d_grad,
                     d_bn_moved))

    bn_after_step = []
    model._optimize_hook = hook
    out = model.training_step(batch(), 0)
    assert [s[0] for s in seen] == ["discriminator", "generator"]
    (_, g_in_d, d_in_d, g_grad_d, d_grad_d, _), (_, g_in_g, d_in_g, g_grad_g, d_grad_g, bn_in_g) = seen
    # D step: the fakes were detached, so D's backward leaves no gradient in G; every D parameter moved.
    assert not any(g_grad_d) and all(d_grad_d)
    assert not any(g_in_d) and all(d_in_d)
    # G step: D is frozen (no gradient, not updated); every G parameter got a gradient and moved.
    assert not any(d_grad_g) and all(g_grad_g)
    assert not any(d_in_g) and all(g_in_g)
    # Documented choice (baselines/gan.py): D runs in train mode in the G step, as DCGAN's reference code does,
    # so its BatchNorm running statistics move there; they are never read (D is never run in eval mode).
    assert bn_in_g
    assert {"loss", "d_loss", "g_loss", "diversity"} <= set(out)
    assert all(p.requires_grad for p in model.parameters())  # D unfrozen again


def test_optimizers_hold_disjoint_parameter_sets_with_dcgan_settings():
    model = make("dcgan")
    opts = model.configure_optimizers()
    d_ids = {id(p) for grp in opts["discriminator"].param_groups for p in grp["params"]}
    g_ids = {id(p) for grp in opts["generator"].param_groups for p in grp["params"]}
    assert d_ids == {id(p) for p in model.discriminator.parameters()}
    assert g_ids == {id(p) for p in model.generator.parameters()}
    for opt in opts.values():
        assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_networks_adapt_to_image_size(name, size):
    model = make(name, size=size)
    z = torch.randn(3, SMALL["latent_dim"])
    y = torch.tensor([0, 1, 2]) if name == "cdcgan" else None
    img = model.generator(z, y)
    assert img.shape == (3, 1, size, size) and img.abs().max() <= 1
    assert model.discriminator(img, y).shape == (3,)
    model.eval()
    s = model.sample(5, labels=torch.arange(5) if name == "cdcgan" else None, generator=torch.Generator().manual_seed(0))
    assert s.images.shape == (5, 1, size, size) and s.nfe == 1
    assert 0 <= float(s.images.min()) and float(s.images.max()) <= 1


def test_conditional_generator_uses_the_label():
    model = make("cdcgan")
    model.eval()
    z = torch.randn(1, SMALL["latent_dim"]).expand(2, -1)
    out = model.generator(z, torch.tensor([0, 7]))
    assert not torch.allclose(out[0], out[1])


def test_bad_inputs_are_clear_errors():
    with pytest.raises(BenchError, match="power-of-two"):
        make("dcgan", size=24)
    with pytest.raises(BenchError, match="no labels"):
        make("cdcgan", classes=0)
    model = make("dcgan")
    with pytest.raises(BenchError, match="unknown sampler option .*known: none"):
        model.sample(2, steps=3)
    with pytest.raises(BenchError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))
    assert not model.has_likelihood
    with pytest.raises(NotImplementedError):
        model.nll_bits_per_dim(batch())


def test_divergence_rule_discriminator_wins():
    model = make("dcgan", diverge_patience=3)
    model._check_divergence(1e-4, 20.0, 0.5)
    model._check_divergence(1e-4, 20.0, 0.5)
    model._check_divergence(0.5, 1.0, 0.5)  # a normal step resets the count
    model._check_divergence(1e-4, 20.0, 0.5)
    model._check_divergence(1e-4, 20.0, 0.5)
    with pytest.raises(FloatingPointError, match="diverged: discriminator won"):
        model._check_divergence(1e-4, 20.0, 0.5)
    with pytest.raises(FloatingPointError, match="diverged: non-finite"):
        make("dcgan")._check_divergence(float("nan"), 1.0, 0.5)
    off = make("dcgan", diverge_patience=0)
    for _ in range(10):
        off._check_divergence(1e-4, 20.0, 0.0)


def test_collapsed_generator_is_flagged_in_training():
    model = make("dcgan", diverge_patience=3, diverge_d_loss=0.0)
    with torch.no_grad():  # a generator that maps every z to the same image
        model.generator.net[-2].weight.zero_()
    with pytest.raises(FloatingPointError, match="diverged: mode collapse"):
        for step in range(10):
            model.training_step(batch(seed=step), step)
    assert step == 2


def test_counters_are_checkpointed():
    model = make("dcgan", diverge_patience=5)
    model._check_divergence(1e-4, 20.0, 0.5)
    model._check_divergence(1e-4, 20.0, 0.01)
    fresh = make("dcgan", diverge_patience=5)
    fresh.load_state_dict(model.state_dict())
    assert int(fresh._won_steps) == 2 and int(fresh._collapsed_steps) == 1


@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_trains_on_mnist_test_subset(name, shared_data):
    from bench.data import load_split

    data = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(shared_data))
    model = registry.get(name)(SMALL, data.spec)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        out = model.training_step(Batch(data.x[step * 32:(step + 1) * 32], data.y[step * 32:(step + 1) * 32], g), step)
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    model.eval()
    s = model.sample(4, generator=g)
    assert s.images.shape == (4, 1, 32, 32)


def test_a_collapsing_gan_run_is_recorded_diverged_and_the_suite_goes_on(workdirs, capsys, tmp_path):
    # End to end through `bench run`: the wrapper's divergence rule becomes the record's status, the
    # other model still runs, and the exit code says a run is not ok.
    from bench import cli, records
    from tests.helpers import TINY_DIGITS, run_cli, write_suite

    body = TINY_DIGITS.replace("image_size = 8", "image_size = 16").replace(
        "[models.reference]",
        "[models.gan]\n    model = \"dcgan\"\n    g_channels = 8\n    d_channels = 8\n    latent_dim = 16\n"
        "    collapse_ratio = 100.0\n    diverge_patience = 2\n    [models.reference]")
    suite = write_suite(tmp_path / "s.toml", body)
    code, out, err = run_cli(["run", "--suite", str(suite), "--results", str(workdirs["results"]), "--checkpoints",
                              str(workdirs["checkpoints"]), "--quiet", "--no-report"], capsys)
    recs = {r.model: r for r in records.load_records(workdirs["results"], "tiny", "smoke")}
    assert recs["gan"].status == "diverged" and "mode collapse" in recs["gan"].error
    assert recs["gan"].train["steps"] == 1  # the second step tripped the rule and is not counted
    assert recs["reference"].status == "ok"
    assert code == cli.EXIT_RUN_FAILED and "gan seed 0 diverged" in err


def test_docs_smoke_table_is_the_committed_baseline():
    # docs/flow_matching_gans.md says its smoke table is results/baseline/digits-fm-gan.json; keep it so (GAN
    # bits/dim is recorded as null and must read "not defined"). Regenerated the baseline? Re-copy the table.
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runs = json.loads((root / "results/baseline/digits-fm-gan.json").read_text())["runs"]
    doc = (root / "docs/flow_matching_gans.md").read_text()
    for name in ("cfm", "ot-cfm", "dcgan", "cdcgan"):
        m = {k: (v or {}).get("mean") for k, v in runs[name]["metrics"].items()}
        bpd = "not defined" if m["bits_per_dim"] is None else f"{m['bits_per_dim']:.2f}"
        row = (f"| `{name}` | {bpd} | {m['fid']:.1f} | {m['is']:.2f} | {m['train_images_per_second']:.0f} |")
        assert row in doc, f"docs/flow_matching_gans.md smoke table is stale for {name}; expected the row {row}"
