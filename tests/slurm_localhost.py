"""A real single-node SLURM cluster on localhost for tests/test_slurm.py.

munged, MariaDB (bound to 127.0.0.1, private data dir, no grant tables), slurmdbd, slurmctld and
slurmd, each started in its own process session with a generated config under a temp folder,
and stopped by PID. Needs root and Debian's slurmctld slurmd slurm-client munge slurmdbd
mariadb-server (scripts/install_slurm.sh). ``LocalSlurm.start()`` raises ``ClusterUnavailable``
with the reason when anything is missing or a daemon does not come up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, logs: list[Path] = (), proc: subprocess.Popen | None = None) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            what = f"{what} (exited with code {proc.returncode})"
            break
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.25)
    tail = ""
    for log in logs:
        if Path(log).is_file():
            tail += f"\n--- {log}:\n" + "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:])
    raise ClusterUnavailable(f"{what} did not come up (waited up to {timeout:.0f} s){tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.munged_pid: int | None = None
        self.env: dict[str, str] = {}

    # -- helpers --
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.out", "w")
        env = {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}  # slurmdbd finds slurmdbd.conf beside it
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root, env=env)
        self.procs[name] = p
        return p

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env}
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, check=check, timeout=timeout)

    # -- start --
    def start(self) -> "LocalSlurm":
        if os.geteuid() != 0:
            raise ClusterUnavailable("needs root to start munged/slurmd (run as root or in CI)")
        need = ["munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "mariadbd", "mariadb-install-db"]
        missing = [n for n in need if not _which(n)]
        if missing:
            raise ClusterUnavailable(f"missing {', '.join(missing)}; run scripts/install_slurm.sh "
                                     "(apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._start_db()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        probe = subprocess.run("munge -n | unmunge", shell=True, capture_output=True)
        if probe.returncode == 0:
            return  # a munged is already running; leave it alone
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], capture_output=True)
        pidfile = self.root / "munged.pid"
        r = subprocess.run(["runuser", "-u", "munge", "--", _which("munged"), "--pid-file", "/run/munge/munged.pid"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {r.stderr.strip()}")
        _wait(lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0, 10, "munged")
        try:
            self.munged_pid = int(Path("/run/munge/munged.pid").read_text().split()[0])
        except (OSError, ValueError):
            self.munged_pid = None
        pidfile.write_text(str(self.munged_pid))

    def _start_db(self) -> None:
        db = self.root / "mysql"
        r = subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise ClusterUnavailable(f"mariadb-install-db failed: {(r.stderr or r.stdout).strip()[-300:]}")
        self.db_port = _free_port()
        self._spawn("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={db}", "--user=root",
                                 "--bind-address=127.0.0.1", f"--port={self.db_port}", "--skip-grant-tables",
                                 f"--socket={self.root / 'mysql.sock'}", f"--pid-file={self.root / 'mysql.pid'}",
                                 "--skip-log-bin", "--innodb-buffer-pool-size=32M"])
        _wait(lambda: _port_open(self.db_port), 60, "mariadbd", [self.root / "mariadbd.out"], self.procs["mariadbd"])
        self.dbd_port = _free_port()
        conf = self.root / "slurmdbd.conf"
        conf.write_text("\n".join([
            "AuthType=auth/munge", "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}",
            "SlurmUser=root", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}", "StorageUser=root", "StoragePass=x", "StorageLoc=slurm_acct_db",
            f"PidFile={self.root / 'slurmdbd.pid'}", f"LogFile={self.root / 'slurmdbd.log'}", "DebugLevel=info", ""]))
        conf.chmod(0o600)
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
        _wait(lambda: _port_open(self.dbd_port), 60, "slurmdbd", [self.root / "slurmdbd.log", self.root / "slurmdbd.out"],
              self.procs["slurmdbd"])

    def _start_slurm(self) -> None:
        node = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True).stdout.splitlines()[0]
        fields = dict(kv.split("=", 1) for kv in node.split() if "=" in kv)
        host = fields["NodeName"]
        cpus = fields.get("CPUs", "1")
        mem = max(1000, int(int(fields.get("RealMemory", "2000")) * 0.8))
        ctld, slurmd_port = _free_port(), _free_port()
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        self.conf = self.root / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=genbench", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld}",
            f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2",
            "AuthInfo=cred_expire=10", "SchedulerParameters=batch_sched_delay=0,sched_interval=1",
            "EnforcePartLimits=ALL", "KillWait=10", "MinJobAge=300", "JobRequeue=1", "InactiveLimit=0",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={self.dbd_port}", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "SlurmctldDebug=info", "SlurmdDebug=info",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {"SLURM_CONF": str(self.conf)}
        os.environ["SLURM_CONF"] = str(self.conf)  # submitit's sbatch/sacct/scontrol calls inherit it
        logs = [self.root / "log" / "slurmctld.log", self.root / "slurmctld.out"]
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        _wait(lambda: _port_open(ctld), 30, "slurmctld", logs, self.procs["slurmctld"])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", host])

        def idle() -> bool:
            out = self.run("sinfo", "-h", "-o", "%T", check=False).stdout
            return "idle" in out or "mixed" in out

        _wait(idle, 60, "slurmd (node idle)", logs + [self.root / "log" / "slurmd.log"], self.procs["slurmd"])

        def accounting() -> bool:
            r = self.run("sacct", "-n", "-X", "-S", "now-1hour", check=False)
            return r.returncode == 0
        _wait(accounting, 30, "accounting (sacct)", [self.root / "slurmdbd.log"])

    # -- stop --
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            # cancel what is left so no job step outlives the cluster, then wait for it to drain
            self.run("scancel", "--user", "root", check=False)
            t_end = time.monotonic() + 30
            while time.monotonic() < t_end and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.munged_pid = None
        if os.environ.get("SLURM_CONF") == str(getattr(self, "conf", "")):
            del os.environ["SLURM_CONF"]


if __name__ == "__main__":  # manual use: python tests/slurm_localhost.py /tmp/slurm  (Ctrl-C stops it)
    import sys

    c = LocalSlurm(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/genbench-slurm"))
    t0 = time.monotonic()
    c.start()
    print(f"up in {time.monotonic() - t0:.1f} s; export SLURM_CONF={c.conf}", flush=True)
    try:
        signal.pause()
    finally:
        c.stop()
