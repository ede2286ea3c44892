"""A throwaway single-node SLURM cluster (Debian slurm-wlm + munge) for the workflow's SLURM test.

``SlurmCluster`` writes ``/etc/slurm/slurm.conf`` (job steps look for it
there), starts munged, slurmctld and slurmd as root with their state under a
temporary folder, waits for the node, and on ``stop`` cancels every job,
stops every daemon it started and removes its configuration again. It refuses
(the test is skipped) where SLURM daemons already run or another
``slurm.conf`` exists: a real cluster is never touched.
There is no accounting daemon: ``MinJobAge`` is long so that ``squeue`` still
reports finished jobs to the executor's status checks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel")
CONF_STAMP = "# written by cryoflow's tests; removed when the test ends"


def is_running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    if not Path("/etc/munge/munge.key").is_file():
        return "no /etc/munge/munge.key"
    running = [name for name in ("slurmctld", "slurmd") if is_running(name)]
    if running:
        return f"{', '.join(running)} already running here: a real cluster is not touched"
    if SLURM_CONF.exists() and not SLURM_CONF.read_text(errors="replace").startswith(CONF_STAMP):
        return f"{SLURM_CONF} exists (a real cluster's configuration is not touched)"
    return None


def slurm_conf(state: Path, host: str, cpus: int, memory_mb: int) -> str:
    return f"""{CONF_STAMP}
ClusterName=cryoflow-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} Default=NO MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, state: Path, cpus: int | None = None, memory_mb: int = 20000):
        self.state = Path(state)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.started: list[tuple[str, Path]] = []

    def start(self) -> SlurmCluster:
        for folder in ("ctld", "d", "munge"):
            (self.state / folder).mkdir(parents=True, exist_ok=True)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(self.state, self.host, self.cpus, self.memory_mb))
        munge = self.state / "munge"
        socket_path = Path("/run/munge/munge.socket.2")
        if not socket_path.exists():
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    "munged",
                    "--force",
                    f"--pid-file={munge}/munged.pid",
                    f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed",
                ],
                check=True,
            )
            self.started.append(("munged", munge / "munged.pid"))
        subprocess.run(["slurmctld"], check=True)
        self.started.append(("slurmctld", self.state / "slurmctld.pid"))
        subprocess.run(["slurmd"], check=True)
        self.started.append(("slurmd", self.state / "slurmd.pid"))
        self.wait_for_node()
        return self

    def wait_for_node(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
            state = done.stdout.strip()
            if done.returncode == 0 and state and all(s.startswith(("idle", "mixed")) for s in state.split()):
                return
            time.sleep(1.0)
        raise RuntimeError(f"SLURM node not idle after {timeout_s:.0f} s (state {state!r}); see {self.state}/*.log")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True)
        for name, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                subprocess.run(["pkill", "-x", name], capture_output=True)
        for name, _ in self.started:
            for _ in range(50):
                if not is_running(name):
                    break
                time.sleep(0.2)
            else:
                subprocess.run(["pkill", "-9", "-x", name], capture_output=True)
        SLURM_CONF.unlink(missing_ok=True)
