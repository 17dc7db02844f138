import math

import torch

from bench import conventions as C


def test_dequantize_stays_in_the_pixel_bin():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(4, 1, 1, 1)
    y = C.dequantize(x, torch.Generator().manual_seed(0))
    assert torch.all((y * 256).floor().to(torch.uint8) == x)
    assert y.min() >= 0 and y.max() < 1


def test_uniform_density_on_unit_cube_is_exactly_eight_bits():
    d = 12
    assert C.unit_density_to_bits_per_dim(torch.zeros(3), d).tolist() == [8.0, 8.0, 8.0]


def test_logit_transform_logdet_matches_brute_force_jacobian():
    y = torch.rand(1, 1, 2, 2, dtype=torch.float64) * 0.98 + 0.01
    s, logdet = C.logit_transform(y, alpha=0.05)
    jac = torch.autograd.functional.jacobian(lambda v: C.logit_transform(v.view(1, 1, 2, 2), 0.05)[0].flatten(), y.flatten())
    assert torch.allclose(logdet, torch.logdet(jac).unsqueeze(0), atol=1e-10)
    assert torch.allclose(C.inverse_logit_transform(s, 0.05), y, atol=1e-12)


def test_signed_scaling_round_trips_through_uint8():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(C.to_uint8(C.from_signed(C.to_signed(x))), x)
    assert C.bits_per_dim(torch.tensor([math.log(2.0) * 10]), 10).item() == 1.0


def test_draw_takes_the_generators_stream_and_lands_on_the_requested_device():
    """conventions.draw is every wrapper's one RNG helper: the values are the generator's own next draws (so seeded runs
    reproduce and resume), whatever the sampler's positional arguments, and the tensor lands on ``device``."""
    for sampler, args in ((torch.randn, ((3, 4),)), (torch.rand, ((5,),)), (torch.randint, (0, 7, (6,)))):
        got = C.draw(sampler, *args, generator=torch.Generator().manual_seed(3), device=torch.device("cpu"))
        want = sampler(*args, generator=torch.Generator().manual_seed(3))
        assert torch.equal(got, want) and got.device.type == "cpu"
    torch.manual_seed(5)
    unseeded = C.draw(torch.randn, (4,), generator=None, device="cpu")
    torch.manual_seed(5)
    assert torch.equal(unseeded, torch.randn(4))  # no generator: torch's global stream
