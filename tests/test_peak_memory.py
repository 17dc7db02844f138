"""Each run's peak RSS is its own: the high-water mark is reset when a run starts (Linux)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.device import peak_memory_mb, reset_peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs")
def test_a_runs_peak_does_not_include_the_previous_runs_allocation():
    reset_peak_memory(CPU)
    base = peak_memory_mb(CPU)["peak_rss_mb"]
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del big
    after_big = peak_memory_mb(CPU)
    assert after_big["peak_rss_scope"] == "run"
    assert after_big["peak_rss_mb"] >= base + 250
    reset_peak_memory(CPU)  # the next run starts here
    assert peak_memory_mb(CPU)["peak_rss_mb"] < after_big["peak_rss_mb"] - 200
