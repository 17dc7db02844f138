"""Scale-out: ``bench submit`` as a SLURM array (:mod:`bench.launch.slurm`, through submitit, or local
subprocesses), and the per-task body every array task runs (:mod:`bench.launch.local`). The commands that drive them
(`bench submit`, `status`, `collect`) live in :mod:`bench.cli`; multi-process runs in :mod:`bench.distributed`.
See docs/cluster.md.
"""
