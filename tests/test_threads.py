"""Thread choice: torch's intra-op threads follow what the process may use, and the record says why."""

from __future__ import annotations

import pytest
import torch

from bench import threads


def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert threads.cgroup_cpus(cpu_max=v2) == 2  # 1.5 CPUs rounds up
    v2.write_text("max 100000\n")
    assert threads.cgroup_cpus(cpu_max=v2) is None  # unlimited
    q, p = tmp_path / "quota", tmp_path / "period"
    q.write_text("300000"), p.write_text("100000")
    assert threads.cgroup_cpus(cpu_max=tmp_path / "absent", quota=q, period=p) == 3
    q.write_text("-1")
    assert threads.cgroup_cpus(cpu_max=tmp_path / "absent", quota=q, period=p) is None


def test_the_smallest_limit_wins_and_a_request_overrides_all(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 16)
    assert threads.choose(env={}, cgroup=None, busy=0.0) == (16, "affinity mask")
    assert threads.choose(env={}, cgroup=4, busy=0.0) == (4, "cgroup CPU quota")
    assert threads.choose(env={"SLURM_CPUS_PER_TASK": "3"}, cgroup=4, busy=0.0) == (3, "SLURM_CPUS_PER_TASK")
    assert threads.choose(env={"SLURM_CPUS_PER_TASK": "garbage"}, cgroup=None, busy=0.0)[0] == 16
    assert threads.choose(env={"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "3"}, busy=9.0) == (2, "OMP_NUM_THREADS")
    n, why = threads.choose(requested=5, env={"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "2"}, cgroup=4)
    assert n == 5 and why.startswith("requested")


def test_cpus_other_work_keeps_busy_are_left_out(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 2)
    n, why = threads.choose(env={}, cgroup=None, busy=1.0)  # one busy neighbour on two cores
    assert n == 1 and "1.0 of 2 CPUs busy" in why
    assert threads.choose(env={}, cgroup=None, busy=0.3)[0] == 2  # a browser tab's worth of load is not a core
    assert threads.choose(env={}, cgroup=None, busy=5.0)[0] == 1  # never below one thread
    assert threads.choose(env={}, cgroup=None, busy=None) == (2, "affinity mask")  # unknown load: not guessed


def test_busy_cpus_reads_the_idle_share_of_this_processs_cpus_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal
    first = ("cpu  10 0 0 10 0 0 0 0\n"
             "cpu0 100 0 0 900 0 0 0 0\ncpu1 100 0 0 900 0 0 0 0\ncpu2 0 0 0 1000 0 0 0 0\n")
    # 100 jiffies later: cpu0 all busy, cpu1 a quarter busy (idle + iowait count as idle), cpu2 (not ours) all busy
    later = ("cpu  10 0 0 10 0 0 0 0\n"
             "cpu0 200 0 0 900 0 0 0 0\ncpu1 115 0 10 950 25 0 0 0\ncpu2 100 0 0 1000 0 0 0 0\n")
    reads = iter([first, later])
    monkeypatch.setattr(threads.Path, "read_text", lambda self: next(reads))
    assert threads.busy_cpus(window=0.0, stat=stat, cpus={0, 1}) == pytest.approx(1.25)
    monkeypatch.setattr(threads.Path, "read_text", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
    assert threads.busy_cpus(window=0.0, stat=stat, cpus={0, 1}) is None


def test_ddp_processes_on_one_node_share_the_cpus(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 16)
    n, why = threads.choose(env={"LOCAL_WORLD_SIZE": "4"}, cgroup=None, busy=12.0)  # its own processes: not load
    assert n == 4 and "4 DDP processes" in why
    assert threads.choose(env={"LOCAL_WORLD_SIZE": "32"}, cgroup=None)[0] == 1  # never below one thread


def test_apply_sets_torch_threads_and_describes_the_choice(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        info = threads.apply(1)
        assert torch.get_num_threads() == 1 and info["torch_threads"] == 1
        assert info["threads_chosen_by"].startswith("requested") and info["cpus_allowed"] >= 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        info = threads.apply(None)
        assert info["torch_threads"] == 1 and info["threads_chosen_by"] == "SLURM_CPUS_PER_TASK"
    finally:
        torch.set_num_threads(before)
