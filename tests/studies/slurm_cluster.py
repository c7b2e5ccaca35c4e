"""A single-node Slurm cluster on localhost, for the tests of `minidyn study slurm` and torchrun.

    cluster = LocalSlurm(Path("/tmp/x"))   # a directory of its own, made and removed by it
    cluster.start()                        # munged, slurmctld, slurmd; the node idle
    subprocess.run(["sbatch", ...], env=cluster.env)   # SLURM_CONF names its slurm.conf
    cluster.stop()                         # every job cancelled, every daemon stopped, dir removed

Everything it runs is a child of this process in the foreground (`-D`, `-F`), so it stops exactly
the daemons it started (by their pids), never a system's own. The config is written for this
machine (`slurmd -C`: its cores, sockets and memory), with free ports, its own munge key and
socket, state and spool under the directory: a running system Slurm or munge is not touched.
proctrack/linuxproc and task/none: no cgroups. `unavailable()` says why a cluster cannot be
started here (not root, a program missing), for the tests to skip with; .ci/slurm-setup
installs Debian's slurm-wlm and munge.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")


def unavailable() -> str | None:
    """Why a local cluster cannot be started here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd runs jobs as their users)"
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): "
                "`.ci/slurm-setup` installs Debian's slurm-wlm and munge")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> str:
    """This machine as slurm.conf describes a node (`slurmd -C`: CPUs, sockets, cores, memory),
    reachable on 127.0.0.1; memory a little below what slurmd counts, so that the node is never
    drained for having less than configured."""
    words = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split()
    fields = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("UpTime"))
    fields["RealMemory"] = str(max(1, int(int(fields.get("RealMemory", "1000")) * 0.9)))
    name = fields.pop("NodeName")
    return " ".join([f"NodeName={name}", "NodeAddr=127.0.0.1", *(f"{k}={v}" for k, v in fields.items()),
                     "State=UNKNOWN"])


class LocalSlurm:
    """munged, slurmctld and slurmd on this machine, configured under `root` (which it owns)."""

    def __init__(self, root: Path, kill_wait: int = 5):
        self.root = Path(root)
        self.kill_wait = kill_wait
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for name in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if name != "SLURM_CONF":  # this process's own job (tests run inside Slurm) is not ours
                del self.env[name]

    def write_config(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        r = self.root
        lines = [
            "ClusterName=minidyn-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "JobRequeue=1", "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            f"KillWait={self.kill_wait}", "MinJobAge=600", "InactiveLimit=0", "Waittime=0",
            "SlurmdTimeout=300", "MessageTimeout=10",
            node_line(),
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _daemon(self, name: str, command: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        with log:
            self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env,
                                                start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        """Start the three daemons and wait until the node takes jobs; RuntimeError (with the
        daemons' logs) if it does not within `timeout` seconds: everything is stopped first."""
        try:
            self.write_config()
            m = self.root / "munge"
            self._daemon("munged", ["munged", "-F", "--force", f"--socket={self.socket}",
                                    f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                                    f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
            self._wait(lambda: self.socket.exists(), timeout, "munged's socket")
            self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._run("scontrol", "ping").returncode == 0
                       and "UP" in self._run("scontrol", "ping").stdout, timeout, "slurmctld")
            self._daemon("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
            self._wait(self._idle, timeout, "the node to be idle")
        except BaseException:
            self.stop()
            raise

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=30)

    def _idle(self) -> bool:
        return self._run("sinfo", "-h", "-N", "-o", "%t").stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                raise RuntimeError(f"local Slurm: no {what} ({', '.join(dead) or 'timeout'}):\n" + self.logs())
            time.sleep(0.2)

    def logs(self) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)

    def jobs(self) -> list[str]:
        result = self._run("squeue", "-h", "-o", "%i")
        return result.stdout.split() if result.returncode == 0 else []

    def stop(self) -> None:
        """Cancel every job of this cluster and wait for them, stop the daemons it started
        (SIGTERM, then SIGKILL after 20 s) and remove its directory."""
        try:
            if "slurmd" in self.procs and self.procs["slurmd"].poll() is None and self.jobs():
                self._run("scancel", "--full", *self.jobs())
                deadline = time.time() + 30
                while self.jobs() and time.time() < deadline:
                    time.sleep(0.3)
        except (OSError, subprocess.SubprocessError):
            pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
