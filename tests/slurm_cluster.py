"""A real single-node SLURM cluster in a temporary folder, for tests that submit jobs with sbatch.

`slurm_cluster(folder)` starts munged, slurmctld and slurmd as the current user (root: SLURM runs jobs as
the submitting user, and slurmd must be root to do that), with everything they write in `folder`: a
munge key and socket, slurm.conf and cgroup.conf, state, spool, pid and log files. Nothing in /etc is
read or changed (SLURM_CONF points the daemons and the clients at the folder's slurm.conf, whose
AuthInfo names the folder's munge socket), and the ports are free ones, so it runs beside a real
SLURM or another test session's cluster. It yields the environment for sbatch, squeue, submitit and
`python train.py -m hydra/launcher=slurm` (os.environ plus SLURM_CONF, PATH with the sbin folders,
no SLURM_* of an enclosing job) once `sinfo` shows the node idle, and stops the daemons on exit.

The node has the machine's CPUs (nproc) and its memory less a margin, one partition (the default),
no accounting (submitit then warns about sacct at each poll and still works), no cgroups
(proctrack/linuxproc, task/none) and no GPUs. Debian: `apt-get install slurmctld slurmd munge`
(slurm-client comes with them); SLURM 22.05 (bookworm) is what it was written on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "squeue", "scontrol", "srun")
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
MEMORY_MARGIN_MB = 1024  # RealMemory is the machine's memory less this, so slurmd never finds less


def search_path() -> str:
    """PATH with the sbin folders, where Debian installs the daemons (a user's PATH often lacks them)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [d for d in SBIN if d not in parts])


def missing_programs() -> list[str]:
    """The daemons and clients this cluster needs that are not installed."""
    return [name for name in DAEMONS + CLIENTS if shutil.which(name, path=search_path()) is None]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (bound together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def cpu_count() -> int:
    """The CPUs this process may use (`nproc`)."""
    return len(os.sched_getaffinity(0))


def memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def slurm_conf(folder: Path, node: str, cpus: int, memory: int, ports: list[int], munge_socket: Path) -> str:
    return f"""\
# A single-node test cluster (tests/slurm_cluster.py); everything it writes is under {folder}.
ClusterName=rnnexp-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
# cred_expire: a requeued job waits this long (+1 s) before it starts again (default 120 s)
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={folder}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# A node with less than configured (a container's view of the CPUs) is used anyway, not drained.
SlurmdParameters=config_overrides
# Schedule at once: a test waits on every submission and every requeue.
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MessageTimeout=30
# Seconds from SIGTERM to SIGKILL at a time limit or a cancel (30 by default).
KillWait=10
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class ClusterError(RuntimeError):
    pass


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path.name}: none)"
    return f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def slurm_cluster(folder: Path, start_timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Starts the cluster in `folder`; yields the environment its clients need; stops it on exit."""
    missing = missing_programs()
    if missing:
        raise ClusterError(f"not installed: {', '.join(missing)}")
    folder = Path(folder).resolve()
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged refuses group- or world-writable folders on its paths
    (folder / "munge").chmod(0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = folder / "munge" / "munge.socket"
    node = socket.gethostname().split(".")[0]  # `hostname -s`: slurmd finds its node by this name
    ports = free_ports(2)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, node, cpu_count(), memory_mb() - MEMORY_MARGIN_MB, ports,
                               munge_socket))
    (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")  # read even without cgroup plugins
    (folder / "plugstack.conf").write_text("")  # not /etc/slurm's
    path = search_path()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env.update(SLURM_CONF=str(conf), PATH=path)

    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(folder / f"{name}.out", "wb")  # the process keeps its own copy of the file
        processes.append(subprocess.Popen([shutil.which(name, path=path), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True))
        log.close()

    def fail(message: str) -> ClusterError:
        logs = "\n".join(_tail(folder / n) for n in ("munged.log", "slurmctld.log", "slurmd.log",
                                                    "munged.out", "slurmctld.out", "slurmd.out"))
        return ClusterError(f"{message}\n{logs}")

    try:
        start("munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
              f"--pid-file={folder / 'munge' / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
              f"--seed-file={folder / 'munge' / 'munged.seed'}")
        deadline = time.monotonic() + start_timeout
        while not munge_socket.exists():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise fail("munged did not start")
            time.sleep(0.05)
        start("slurmctld", "-D", "-i", "-f", str(conf))  # -i: ignore state left by an earlier start
        start("slurmd", "-D", "-f", str(conf))
        state = ""
        while True:
            for process, name in zip(processes, DAEMONS, strict=True):
                if process.poll() is not None:
                    raise fail(f"{name} exited with status {process.returncode}")
            sinfo = subprocess.run(["sinfo", "--noheader", "--format=%T", f"--nodes={node}"], env=env,
                                   capture_output=True, text=True, timeout=30)
            state = sinfo.stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                raise fail(f"the node is not idle after {start_timeout:.0f} s: sinfo says {state!r} "
                           f"{sinfo.stderr.strip()!r}")
            time.sleep(0.2)
        yield env
    finally:
        if len(processes) == len(DAEMONS):  # jobs still there (a failed test): cancel them while slurmd runs
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(["scancel", f"--user={os.getuid()}"], env=env, capture_output=True, timeout=30)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and subprocess.run(
                        ["squeue", "--noheader"], env=env, capture_output=True, text=True, timeout=30).stdout.strip():
                    time.sleep(0.5)
        for process in reversed(processes):  # slurmd, slurmctld, munged
            if process.poll() is None:
                process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
