"""Power faults for the local test cluster (docs/FAULTS.md §1 and §5): a node's power loss and an
accounting outage, made with signals to THIS cluster's processes only, and undone the way
``slurm_conf/cluster up`` starts them, so that ``slurm_conf/cluster down`` still stops them.

* ``kill_node(cluster, "a4k-1")`` — as in a power loss: SIGKILL the node's ``slurmd``, every
  ``slurmstepd`` it started and all their processes (the job's), nothing of another node.
  Returns a ``PoweredOff`` that remembers how the slurmd was started (argv, environment and
  working directory, read from /proc before the kill).
* ``restore_node(cluster, off)`` — start that slurmd again with the same argv, environment and
  directory, in its own session, its PID in ``run/slurmd-<node>.pid`` (slurmd writes the same
  file itself). With ``ReturnToService=2`` the node is back in service when it registers.
* ``stop_daemon(cluster, "slurmdbd" | "mariadb")`` / ``start_daemon(cluster, name)`` — one
  daemon down and up again through the cluster script's own ``kill DAEMON`` / ``start DAEMON``.

``cluster``: anything with ``dir`` (the cluster directory) and ``env`` (``SLURM_CONF``), e.g.
tests/conftest.py's ``LiveCluster``; or a plain path to the directory.

How a node's processes are found (several ``slurmd -N <name>`` share one host): the slurmd by
its pid file and argv (``-N <name>``, this cluster's ``SLURM_CONF``); its slurmstepds (reparented
to init, argv ``slurmstepd: [<job>.<step>]``, this cluster's ``SLURM_CONF``) by the files they
hold open: a unix socket or file under the node's ``SlurmdSpoolDir`` or its ``SlurmdLogFile``;
the job's processes as the slurmstepds' descendants, plus any process whose environment says
``SLURMD_NODENAME=<name>`` with this cluster's ``SLURM_CONF`` (a daemonised child of a job)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "slurm_conf" / "cluster"
PROGRAMS = {"munged": "munged", "mariadb": "mariadbd", "slurmdbd": "slurmdbd",
            "slurmctld": "slurmctld"}


@dataclass(frozen=True)
class Started:
    """How a daemon was started: enough to start it again exactly so."""

    name: str            # its pid file's name: slurmd-a4k-1
    pid: int             # the PID it had
    argv: tuple[str, ...]
    env: dict
    cwd: str
    log: str             # where its output went (the cluster script's log file)


@dataclass(frozen=True)
class PoweredOff:
    node: str
    slurmd: Started
    killed: tuple[int, ...]   # every PID that got SIGKILL (slurmd first)
    at: float                 # time.time() of the kill


def _dir(cluster) -> Path:
    return Path(getattr(cluster, "dir", cluster)).resolve()


def _slurm_conf(cluster) -> str:
    env = getattr(cluster, "env", None) or {}
    return env.get("SLURM_CONF") or str(_dir(cluster) / "etc" / "slurm.conf")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _argv(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline") or b""
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _environ(pid: int) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ") or b""
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep:
            out[k] = v
    return out


def _ppid(pid: int) -> int | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces or parentheses
    return int(raw[raw.rindex(b")") + 2:].split()[1])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: only its exit status is left)."""
    raw = _read(f"/proc/{pid}/stat")
    return raw is not None and raw[raw.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _conf_value(conf: str, key: str) -> str | None:
    for line in Path(conf).read_text().splitlines():
        m = re.match(rf"\s*{key}\s*=\s*(\S+)", line, re.IGNORECASE)
        if m:
            return m.group(1)
    return None


def _pid_file(cluster, name: str) -> Path:
    return _dir(cluster) / "run" / f"{name}.pid"


def _is_daemon(cluster, name: str, pid: int) -> bool:
    """``pid`` is daemon ``name`` of THIS cluster (program, -N node, SLURM_CONF)."""
    argv = _argv(pid)
    if not argv or not _alive(pid):
        return False
    prog = "slurmd" if name.startswith("slurmd-") else PROGRAMS.get(name, name)
    if os.path.basename(argv[0]) != prog:
        return False
    if name.startswith("slurmd-"):
        node = name.removeprefix("slurmd-")
        if not any(a == "-N" and b == node for a, b in zip(argv, argv[1:])):
            return False
    env = _environ(pid)
    return not env or env.get("SLURM_CONF") == _slurm_conf(cluster)


def daemon_pid(cluster, name: str) -> int | None:
    """The PID of this cluster's daemon ``name`` (pid file name: ``slurmd-a4k-1``, ``slurmdbd``,
    ``mariadb``…) when it runs, else None."""
    try:
        pid = int(_pid_file(cluster, name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_daemon(cluster, name, pid) else None


def _started(cluster, name: str, pid: int) -> Started:
    return Started(name=name, pid=pid, argv=tuple(_argv(pid)), env=_environ(pid),
                   cwd=os.readlink(f"/proc/{pid}/cwd"), log=str(_dir(cluster) / "log" / f"{name}.out"))


def _holds(pid: int, paths: tuple[str, ...], sockets: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(paths) or (target.startswith("socket:[") and target[8:-1] in sockets):
            return True
    return False


def _unix_sockets_under(prefix: str) -> set[str]:
    """Inodes of the unix sockets bound under ``prefix`` (/proc/net/unix)."""
    out = set()
    for line in (_read("/proc/net/unix") or b"").decode(errors="replace").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7].startswith(prefix):
            out.add(parts[6])
    return out


def node_processes(cluster, node: str) -> list[int]:
    """The node's slurmstepds and every process of its jobs (not its slurmd)."""
    conf = _slurm_conf(cluster)
    spool = (_conf_value(conf, "SlurmdSpoolDir") or "").replace("%n", node).replace("%h", node)
    logf = (_conf_value(conf, "SlurmdLogFile") or "").replace("%n", node).replace("%h", node)
    paths = tuple(p for p in (spool.rstrip("/") + "/" if spool else "", logf) if p)
    sockets = _unix_sockets_under(spool.rstrip("/") + "/") if spool else set()
    ours, children = set(), {}
    for pid in _pids():
        ppid = _ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
        argv = _argv(pid)
        env = _environ(pid)
        if env.get("SLURM_CONF") != conf:
            continue
        if argv and argv[0].startswith("slurmstepd") and _holds(pid, paths, sockets):
            ours.add(pid)
        elif env.get("SLURMD_NODENAME") == node and env.get("SLURM_JOB_ID"):
            ours.add(pid)
    todo = list(ours)
    while todo:   # the slurmstepds' descendants (a job may clear its environment)
        for child in children.get(todo.pop(), ()):
            if child not in ours:
                ours.add(child)
                todo.append(child)
    return sorted(ours)


def kill_node(cluster, node: str) -> PoweredOff:
    """Power loss of ``node``: SIGKILL its slurmd, its slurmstepds and all their processes."""
    name = f"slurmd-{node}"
    pid = daemon_pid(cluster, name)
    if pid is None:
        raise RuntimeError(f"{name} of {_dir(cluster)} is not running: nothing to power off")
    started = _started(cluster, name, pid)
    at = time.time()
    killed = [pid]
    os.kill(pid, signal.SIGKILL)
    for _ in range(3):   # a process forked while we were killing is caught on the next pass
        batch = [p for p in node_processes(cluster, node) if p not in killed and _alive(p)]
        if not batch:
            break
        for p in batch:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed += batch
    _wait_gone(killed, 10)
    return PoweredOff(node=node, slurmd=started, killed=tuple(killed), at=at)


def _wait_gone(pids, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"still alive after SIGKILL: {[p for p in pids if _alive(p)]}")
        time.sleep(0.05)


def _spawn(cluster, st: Started) -> int:
    """Start ``st`` again as the cluster script does: own session, output appended to its log,
    stdin from /dev/null, PID in run/<name>.pid (the daemon is re-parented to init)."""
    out = subprocess.run(
        ["/bin/sh", "-c", 'log=$1 dir=$2; shift 2; '
         '(cd "$dir" && exec setsid "$@") >>"$log" 2>&1 </dev/null & echo $!',
         "spawn", st.log, st.cwd, *st.argv],
        env=st.env, capture_output=True, text=True, timeout=30, check=True).stdout
    pid = int(out.split()[0])
    _pid_file(cluster, st.name).write_text(f"{pid}\n")
    return pid


def restore_node(cluster, off: PoweredOff, timeout: float = 60) -> int:
    """Power ``off.node`` back on: its slurmd started as before. Returns the new PID once it
    runs and Slurm has the node back (not DOWN: ReturnToService=2)."""
    if daemon_pid(cluster, off.slurmd.name) is not None:
        raise RuntimeError(f"{off.slurmd.name} is already running")
    st = off.slurmd
    # the log file: the cluster script sends slurmd's stdout/stderr to log/slurmd-<node>.out
    pid = _spawn(cluster, st)
    env = {**os.environ, "SLURM_CONF": _slurm_conf(cluster)}
    deadline = time.monotonic() + timeout
    while True:
        state = subprocess.run(["sinfo", "-h", "-n", off.node, "-o", "%T"], env=env,
                               capture_output=True, text=True).stdout.strip()
        if _alive(pid) and state and not any(w in state for w in ("down", "drain", "fail",
                                                                    "not_responding")):
            return pid
        if not _alive(pid):
            raise RuntimeError(f"{st.name} exited at once after restart (see {st.log})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {off.node} is still {state!r} {timeout} s after its slurmd "
                               f"started again")
        time.sleep(0.2)


def stop_daemon(cluster, name: str, sig: str = "KILL") -> str:
    """Stop this cluster's ``name`` (``slurmdbd``, ``mariadb``…) with the cluster script's own
    fault injection (``slurm_conf/cluster kill NAME``: by its recorded PID, SIGKILL by default —
    an outage, not a shutdown — and wait until it is gone). Returns ``name`` for ``start_daemon``."""
    _cluster_script("kill", name, "--signal", sig, cluster=cluster)
    return name


def start_daemon(cluster, name: str) -> None:
    """Start ``name`` again as ``slurm_conf/cluster up`` does (``slurm_conf/cluster start NAME``:
    same command line, PID file, log) and wait until it answers."""
    _cluster_script("start", name, cluster=cluster)


def _cluster_script(*args: str, cluster) -> None:
    res = subprocess.run([str(CLUSTER_SCRIPT), *args, "--dir", str(_dir(cluster))],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"slurm_conf/cluster {' '.join(args)} failed ({res.returncode}): "
                           f"{res.stdout}{res.stderr}")
