"""One node's part of a multi-node job: ``python -m git_gateway.node.rank SPEC.json``.

The batch step's runner (``runner``, on the first node) checks the job out, then starts one of
these per node with ``srun_command`` (``srun --nodes=N --ntasks=N --ntasks-per-node=1
--kill-on-bad-exit=1 <python> -m git_gateway.node.rank SPEC``) in ``srun_env`` (its own
environment: srun needs SLURM_JOB_ID & co.). Each rank

    1. loads the spec (the job directory is on a filesystem every node sees) and checks that
       its checkout, /output and inputs are there on this node;
    2. computes the rendezvous variables (``rank_env``), the names of ``spec.RANK_ENV``:
       ``RANK`` = ``NODE_RANK`` = ``$SLURM_PROCID``, ``LOCAL_RANK`` = 0 (one container per
       node; torchrun starts the per-GPU processes), ``WORLD_SIZE`` = ``NNODES`` = the spec's
       ``nodes`` (a warning when ``$SLURM_NTASKS`` says otherwise), ``MASTER_ADDR`` = rank 0's
       node: ``$SLURM_LAUNCH_NODE_IPADDR`` (where srun ran: the batch host, which is rank 0's
       node), else the first host of ``$SLURM_STEP_NODELIST``/``$SLURM_JOB_NODELIST``
       resolved to an address (its name when it does not resolve), ``MASTER_PORT`` = the
       spec's ``master_port``, ``GPUS_PER_NODE`` = the number of ``CUDA_VISIBLE_DEVICES``
       entries on this node (else the spec's ``gpu_count``, else 0);
    3. execs the container exactly as a one-node job runs it (``container_env.container_command``,
       ch-run's read-only wrapper included) in ``launch_env(spec)`` plus those variables (for
       Apptainer also as ``APPTAINERENV_<NAME>``), in the checkout. Rank 0 gets the ``PORT`` the
       runner settled on for its node (``SLIPWAY_RUNNER_PORT``); the others keep the spec's.

So ``torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --nproc_per_node=$GPUS_PER_NODE
--master_addr=$MASTER_ADDR --master_port=$MASTER_PORT train.py`` works in every container. The
rank's exit status is the container's; srun's (the job's) follows from all of them. Nothing is
committed here: the batch step's runner commits once after srun has ended. Exit 2: a bad spec
or not started by srun; 127: the container program could not be executed.

Signals (Slurm 22.05, checked on the local cluster): srun forwards USR1/USR2 to every rank but
answers TERM/HUP with SIGKILL to every rank ("forcing job termination") and INT with a status
line. So the runner delivers TERM/INT/HUP with ``signal_ranks`` (``scancel --signal=<SIG>
$SLURM_JOB_ID``: every step of the job but the batch step) and sends srun TERM only when the
grace is over. With ``--kill-on-bad-exit=1`` a rank that exits non-zero first (say 143 after its
checkpoint) makes Slurm end the others: SIGCONT+SIGTERM, then SIGKILL after KillWait. A plain
``scancel`` or the time limit TERMs the ranks itself and the runner's scancel adds a second TERM.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from .container_env import bind_problem, container_command, launch_env
from .events import say
from .spec import RunnerSpec

#: The directory that holds the ``git_gateway`` package this program runs from.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The PORT the runner settled on for its node (rank 0's), handed to the ranks through srun.
RUNNER_PORT_ENV = "SLIPWAY_RUNNER_PORT"
MODULE = "git_gateway.node.rank"
#: After the grace, srun gets SIGTERM (SIGKILL to every rank) and this long to end, then SIGKILL.
SRUN_KILL_WAIT = 12.0
SCANCEL_TIMEOUT = 10.0


class RankError(ValueError):
    pass


def multinode_problem(spec: RunnerSpec, spec_path: str | None) -> str | None:
    """Why the runner cannot start this multi-node job (None: it can)."""
    if spec.master_port is None:
        return f"a job on {spec.nodes} nodes needs master_port (the ranks' rendezvous port)"
    if spec_path is None:
        return f"a job on {spec.nodes} nodes needs its spec file (for srun)"
    return None


def srun_command(spec: RunnerSpec, spec_path: str, python: str | None = None) -> list[str]:
    """The batch step's command that starts one rank per node."""
    n = spec.nodes
    return [spec.srun, f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", python or sys.executable, "-m", MODULE,
            os.path.abspath(spec_path)]


def srun_env(environ, port: str | None = None) -> dict[str, str]:
    """srun's environment: the runner's own (Slurm's variables), with this package first on
    ``PYTHONPATH``, ``PYTHONSAFEPATH=1`` (Python 3.11+: ``-m`` does not put the checkout, the
    ranks' working directory, on ``sys.path``, so a ``git_gateway/`` in the job's repository
    cannot stand in for this program) and the runner's ``PORT`` for rank 0."""
    env = dict(environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *(p for p in paths if p != PACKAGE_ROOT)])
    env["PYTHONSAFEPATH"] = "1"
    if port is not None:
        env[RUNNER_PORT_ENV] = str(port)
    else:
        env.pop(RUNNER_PORT_ENV, None)
    return env


def srun_cwd(spec: RunnerSpec, spec_path: str) -> str:
    """srun's working directory: the checkout, where PYTHONSAFEPATH keeps it off ``sys.path``;
    with an older python the spec's directory (each rank changes into the checkout itself)."""
    if sys.version_info >= (3, 11):
        return spec.workdir
    return os.path.dirname(os.path.abspath(spec_path))


def slurm_program(spec: RunnerSpec, name: str) -> str:
    """Slurm's ``name`` (scancel) beside the spec's srun when that is a path, else by name."""
    if os.sep in spec.srun:
        return os.path.join(os.path.dirname(spec.srun), name)
    return name


def signal_ranks(spec: RunnerSpec, signum: int, srun_pid: int, environ=None,
                 run=subprocess.run) -> bool:
    """Deliver ``signum`` to every rank of the job: ``scancel --signal=<SIG> $SLURM_JOB_ID``
    (every step of the job but the batch step, where the runner runs). srun cannot do it: it
    answers TERM/HUP with SIGKILL to every rank. Where scancel fails (no SLURM_JOB_ID, no
    answer) srun gets the signal after all (the ranks are ended, without their grace).
    -> whether scancel delivered it."""
    environ = os.environ if environ is None else environ
    name = signal.Signals(signum).name[3:]
    job = (environ.get("SLURM_JOB_ID") or "").strip()
    why = "SLURM_JOB_ID is not set"
    if job.isascii() and job.isdigit():
        cmd = [slurm_program(spec, "scancel"), f"--signal={name}", job]
        try:
            r = run(cmd, capture_output=True, timeout=SCANCEL_TIMEOUT)
            if r.returncode == 0:
                say(f"SIG{name} sent to every rank ({' '.join(cmd)})")
                return True
            why = (r.stderr or b"").decode("utf-8", "replace").strip()[-300:] or \
                f"{cmd[0]} exited {r.returncode}"
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
    say(f"could not signal the ranks through scancel ({why}); SIG{name} to srun, which ends "
        f"every rank")
    try:
        os.killpg(srun_pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    return False


def first_host(nodelist: str | None) -> str | None:
    """The first host of a Slurm host list: ``a4k-[1-3,5],b1`` -> ``a4k-1``,
    ``n[08-09]-ib`` -> ``n08-ib``. None for an empty list."""
    text = (nodelist or "").strip()
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            text = text[:i]
            break
    if "[" not in text:
        return text or None
    prefix, rest = text.split("[", 1)
    inside, _, suffix = rest.partition("]")
    first = inside.split(",")[0].split("-")[0].strip()
    return first_host(prefix + first + suffix)


def master_addr(environ) -> str | None:
    """Rank 0's node: ``SLURM_LAUNCH_NODE_IPADDR``, else the step's (job's) first host,
    resolved to an address when it resolves."""
    addr = (environ.get("SLURM_LAUNCH_NODE_IPADDR") or "").strip()
    if addr:
        return addr
    for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        host = first_host(environ.get(name))
        if host:
            try:
                return socket.gethostbyname(host)
            except OSError:
                return host
    return None


def gpus_per_node(environ, spec: RunnerSpec) -> int:
    """How many GPUs this node's container sees: the ``CUDA_VISIBLE_DEVICES`` entries when
    Slurm set it, else the spec's ``gpu_count`` (per node), else 0."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "NoDevFiles"):
        return len([d for d in visible.split(",") if d.strip()])
    return spec.gpu_count or 0


def rank_env(spec: RunnerSpec, environ) -> dict[str, str]:
    """The ``spec.RANK_ENV`` variables of this rank (a RankError says what is missing)."""
    procid = (environ.get("SLURM_PROCID") or "").strip()
    if not (procid.isascii() and procid.isdigit()):
        raise RankError(f"SLURM_PROCID is {procid or 'not set'}: a rank runs under srun")
    rank, n = int(procid), spec.nodes
    if spec.master_port is None:
        raise RankError("the spec has no master_port (the ranks' rendezvous port)")
    if rank >= n:
        raise RankError(f"SLURM_PROCID {rank} is outside the job's {n} nodes")
    ntasks = (environ.get("SLURM_NTASKS") or "").strip()
    if ntasks and ntasks != str(n):
        say(f"warning: SLURM_NTASKS is {ntasks} but the job has {n} nodes; WORLD_SIZE={n}")
    addr = master_addr(environ)
    if addr is None:
        raise RankError("no address for rank 0: SLURM_LAUNCH_NODE_IPADDR and the node lists "
                        "are not set")
    return {"MASTER_ADDR": addr, "MASTER_PORT": str(spec.master_port), "WORLD_SIZE": str(n),
            "RANK": str(rank), "LOCAL_RANK": "0", "NODE_RANK": str(rank), "NNODES": str(n),
            "GPUS_PER_NODE": str(gpus_per_node(environ, spec))}


def main(argv: list[str] | None = None, environ=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if len(argv) != 1:
        print(f"usage: python -m {MODULE} SPEC.json", file=sys.stderr)
        return 2
    try:
        spec = RunnerSpec.load(argv[0])
    except (OSError, ValueError) as e:
        say(f"rank: bad spec {argv[0]}: {e}")
        return 2
    node = environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        ranks = rank_env(spec, environ)
    except RankError as e:
        say(f"job {spec.job_id} on {node}: {e}")
        return 2
    label = f"job {spec.job_id} rank {ranks['RANK']}/{ranks['WORLD_SIZE']} on {node}"
    if not os.path.isdir(os.path.join(spec.workdir, ".git")):
        say(f"{label}: the checkout {spec.workdir} is not on this node (the job directory must "
            f"be on a filesystem every node sees)")
        return 2
    problem = bind_problem(spec)
    if problem is not None:
        say(f"{label}: cannot start: {problem}")
        return 2
    if ranks["RANK"] == "0" and "PORT" in spec.env and environ.get(RUNNER_PORT_ENV):
        spec.env["PORT"] = environ[RUNNER_PORT_ENV]
    env = launch_env(spec, environ, extra=ranks)
    cmd = container_command(spec)
    say(f"{label}: MASTER_ADDR={ranks['MASTER_ADDR']} MASTER_PORT={ranks['MASTER_PORT']} "
        f"GPUS_PER_NODE={ranks['GPUS_PER_NODE']}: running {cmd[0]}")
    os.chdir(spec.workdir)
    sys.stdout.flush()
    sys.stderr.flush()
    for s in (signal.SIGPIPE, signal.SIGXFSZ):   # python ignores these; the container must not
        signal.signal(s, signal.SIG_DFL)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        say(f"{label}: could not run {cmd[0]}: {e}")
        return 127


if __name__ == "__main__":
    sys.exit(main())
