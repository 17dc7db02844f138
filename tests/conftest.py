"""Shared fixtures: the optional ../shared data, isolated result/checkpoint/cache folders."""

from __future__ import annotations

import os
from pathlib import Path

# Every `bench run` of the tests uses a fixed thread count (the CPUs this process may use, torch's own default
# here), not the load-aware choice (bench.threads, tested on its own): a transient load on the test machine must
# not change a run's thread count, and with it the last bits of the numbers that determinism tests compare.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Benchmarks run once, untimed, in the plain test run; ``--benchmark-only`` or ``--benchmark-enable``
    times them. (An ``addopts = --benchmark-disable`` would make pytest-benchmark refuse ``--benchmark-only``.)"""
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (opt.benchmark_only or opt.benchmark_enable):
        opt.benchmark_disable = True


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (MNIST raw files); skip cleanly where it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip("../shared/data/MNIST not present (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture
def workdirs(tmp_path, monkeypatch):
    """Fresh results/checkpoints/cache folders; the cache also via $GENBENCH_CACHE."""
    dirs = {k: tmp_path / k for k in ("results", "checkpoints", "cache", "reports")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("GENBENCH_CACHE", str(dirs["cache"]))
    return dirs


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module of many small tensor ops: on a busy 2-core machine OpenMP
    workers spinning against each other made such modules up to 100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


from tests.expected_skips_plugin import (  # noqa: E402,F401  (hooks: CI's --expected-skips check)
    pytest_addoption, pytest_runtest_makereport, pytest_sessionfinish,
)
