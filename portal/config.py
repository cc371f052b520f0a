"""Slipway configuration: one dataclass, read from SLIPWAY_* environment variables and an
optional config file (``SLIPWAY_CONFIG``: TOML, or INI with a ``[slipway]`` section).

Precedence: explicit keyword overrides > environment > config file > defaults.

Keys (file key = env var without the ``SLIPWAY_`` prefix, lower-case):

==========================  ==========================================  =====================
key / env var               meaning                                     default
==========================  ==========================================  =====================
database_url                SQLAlchemy URL                              sqlite:///<data_dir>/slipway.db
data_dir                    root of Slipway's files; MUST be on a       /var/lib/slipway (root)
                            filesystem the compute nodes share; private ``make run``: its
                            to Slipway except the job dirs and the      cluster's <dir>/data
                            node program (portal/private_files.py)      (in env.sh)
repos_root                  bare git repositories                       <data_dir>/repos
lfs_root                    git-lfs object store                        <data_dir>/lfs
jobs_dir                    one directory per job (spec, log, work)     <data_dir>/jobs
base_url                    public base URL (git remotes, hooks and     ``slipway serve``:
                            jobs call it back)                          http://HOST:PORT it
                                                                        serves on; others: the
                                                                        URL it last served on
                                                                        (<data_dir>/served_
                                                                        base_url), else
                                                                        http://127.0.0.1:8000
hook_secret                 shared secret git hooks send back           generated once, kept in
                                                                        <data_dir>/hook_secret
gpu_limits                  max GPUs per job per type                   a4000:4,a6000:2
gpu_rates                   US$ per GPU-hour per type                   a4000:0.50,a6000:1.00
storage_rate                US$ per GB-month of storage                 0.10
min_start_balance           a job starts only when balance >= this      1.00
container_runtime           ``charliecloud`` (local) | ``apptainer``    charliecloud
images_root                 where container images live (SIFs for       container_images'
                            apptainer; ch-run directory images)         default cache
partition                   Slurm partition ("" = cluster default)      gpu
cluster_name                name of the Slurm cluster                   slipway
reconcile_interval          seconds between reconciler ticks            5
reconcile_busy_interval     seconds between ticks while a job is ending 1
                            (finishing, cancel pending, sacct settling)
login_max_failures          free failed logins per (account, address)  5
                            before that address waits 1, 2, 4 … 60 s
                            between tries (429); 4x this per account
                            slows only addresses that have failed
login_max_failures_per_address  the same per client address             20
login_failure_window        seconds after its last failure a count     300
                            is forgotten
trusted_proxies             reverse proxies in front of Slipway whose   0
                            X-Forwarded-For/-Proto/-Host are believed
                            (the client address for the login throttle)
cancel_grace                seconds a TERM-cancelled job may take to    60
                            push its files before a hard cancel
stale_reservation           seconds a ``queued`` job may wait for its   300
                            post-receive before it is failed
orphan_reservation_grace    seconds an unclaimed ``queued`` reservation 30
                            waits for its post-receive before the
                            reconciler submits it (branch at its commit)
                            or fails it (push did not complete)
unknown_submission_grace    seconds between the two successful polls    30
                            (squeue, then sacct by name) that must both
                            miss a job whose sbatch had no answer before
                            it is submitted again
storage_interval            seconds between storage billing runs         600
lost_after                  seconds a job may be absent from both the   600
                            queue and accounting before it is failed
node_addresses              node name -> address the job proxy uses     (node name)
                            (``a4k-1:10.0.0.5,*:127.0.0.1``)
account_sync_interval       seconds between convergences of Slurm's     60
                            accounts with the teams
slurm_account_prefix        Slurm accounts named <prefix><team> are     team-
                            this Slipway's: it creates, updates and
                            removes only those (one prefix per
                            Slipway sharing a Slurm database)
accounting_slack            seconds subtracted from the oldest submit   300
                            time for the bounded ``sacct -S`` window
node_python                 python on the compute nodes that runs       /usr/bin/python3
                            ``-m git_gateway.node.runner`` (stdlib only;
                            imported from <data_dir>/node)
default_image               image when a project names none             python
default_time_limit          minutes when a project names none           60
page_slots                  short requests (pages, API, static) served  2 x CPU cores
                            at once, first come first served; git,
                            hooks and the job proxy are not counted
ldap_url                    LDAP server, ``ldap://host:389`` or         "" (no LDAP: local
                            ``ldaps://host:636``                        accounts with passwords)
ldap_bind_dn                service account that searches the           "" (anonymous search)
                            directory
ldap_bind_password          its password                                ""
ldap_user_base              where users are searched (subtree)          "" (required with LDAP)
ldap_group_base             where ``groupOfNames`` teams are            "" (no group sync)
                            searched (subtree)
ldap_user_filter            filter finding one user; ``{username}`` is  (&(objectClass=inetOrg
                            replaced by the escaped login name          Person)(uid={username}))
ldap_uid_attr               attribute holding the Slipway user name     uid
ldap_unix_attr              attribute holding the Unix account jobs     uid
                            run as
ldap_sync_interval          seconds between LDAP → users/teams syncs    300
                            run by the reconciler
==========================  ==========================================  =====================

Maps (``gpu_limits``, ``gpu_rates``) are written ``a4000:4,a6000:2`` in env/INI, or as TOML tables.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import re
import secrets
import sys
import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "SLIPWAY_"

DEFAULT_GPU_LIMITS = {"a4000": 4, "a6000": 2}
DEFAULT_GPU_RATES = {"a4000": Decimal("0.50"), "a6000": Decimal("1.00")}
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
SERVED_URL_FILE = "served_base_url"


def served_base_url(host: str, port: int) -> str:
    """The public URL of a server listening on ``host``:``port`` when none is configured: a
    wildcard address (0.0.0.0, ::) is reached at the loopback address (the local cluster's nodes
    are this machine; nodes elsewhere need ``base_url`` set)."""
    host = (host or "").strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(port)}"


def _default_node_python() -> str:
    """The compute nodes' own python runs the job program (stdlib only): the server's python may
    live where job users cannot read it (a virtualenv under /root, pyenv)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _default_data_dir() -> Path:
    """Where `slipway serve` and the CLI meet without configuration: /var/lib/slipway for root
    (job users must be able to traverse it, so never under /root), else ~/.local/share/slipway."""
    if os.geteuid() == 0:
        return Path("/var/lib/slipway")
    return Path.home() / ".local" / "share" / "slipway"


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    data_dir: Path = field(default_factory=lambda: _default_data_dir())
    database_url: str = ""
    repos_root: Path | None = None
    lfs_root: Path | None = None
    jobs_dir: Path | None = None
    images_root: Path | None = None
    base_url: str = ""  # "": not set (see base_url_is_set); filled in by __post_init__
    hook_secret: str = ""
    gpu_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GPU_LIMITS))
    gpu_rates: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_GPU_RATES))
    node_addresses: dict[str, str] = field(default_factory=dict)
    storage_rate: Decimal = Decimal("0.10")
    min_start_balance: Decimal = Decimal("1.00")
    container_runtime: str = "charliecloud"
    partition: str = "gpu"
    cluster_name: str = "slipway"
    reconcile_interval: float = 5.0
    reconcile_busy_interval: float = 1.0
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window: float = 300.0
    trusted_proxies: int = 0
    cancel_grace: float = 60.0
    stale_reservation: float = 300.0
    orphan_reservation_grace: float = 30.0
    unknown_submission_grace: float = 30.0
    storage_interval: float = 600.0
    lost_after: float = 600.0
    account_sync_interval: float = 60.0
    slurm_account_prefix: str = "team-"
    accounting_slack: float = 300.0
    node_python: str = field(default_factory=lambda: _default_node_python())
    default_image: str = "python"
    default_time_limit: int = 60
    secret_key: str = ""
    page_slots: int = 0
    port_min: int = 10000
    port_max: int = 65535
    ldap_url: str = ""
    ldap_bind_dn: str = ""
    ldap_bind_password: str = ""
    ldap_user_base: str = ""
    ldap_group_base: str = ""
    ldap_user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    ldap_uid_attr: str = "uid"
    ldap_unix_attr: str = "uid"
    ldap_sync_interval: float = 300.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'slipway.db'}"
        self.repos_root = Path(self.repos_root or self.data_dir / "repos").absolute()
        self.lfs_root = Path(self.lfs_root or self.data_dir / "lfs").absolute()
        self.jobs_dir = Path(self.jobs_dir or self.data_dir / "jobs").absolute()
        # None: container_images' default cache (charliecloud); apptainer needs it set
        self.images_root = Path(self.images_root).absolute() if self.images_root else None
        if self.container_runtime == "apptainer" and self.images_root is None:
            raise ConfigError("container_runtime apptainer needs images_root (where the SIFs are)")
        # Unset: `slipway serve` derives it from where it listens, other processes read the URL
        # the server last served on (ensure_secrets), else the default.
        self.base_url_is_set = bool(self.base_url)
        self.base_url = (self.base_url or DEFAULT_BASE_URL).rstrip("/")
        if self.container_runtime not in ("charliecloud", "apptainer"):
            raise ConfigError(
                f"container_runtime must be 'charliecloud' or 'apptainer', not {self.container_runtime!r}"
            )
        for gpu_type in self.gpu_limits:
            if gpu_type not in self.gpu_rates:
                raise ConfigError(f"gpu_rates has no hourly rate for GPU type {gpu_type!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,15}", self.slurm_account_prefix):
            raise ConfigError("slurm_account_prefix must be 1-16 characters: a lower-case letter, "
                              f"then lower-case letters, digits, '-' or '_', not {self.slurm_account_prefix!r}")
        if self.ldap_url:
            if not self.ldap_url.startswith(("ldap://", "ldaps://")):
                raise ConfigError(f"ldap_url must start with ldap:// or ldaps://, not {self.ldap_url!r}")
            if not self.ldap_user_base:
                raise ConfigError("ldap_url is set but ldap_user_base is not (where are the users?)")
            if "{username}" not in self.ldap_user_filter:
                raise ConfigError("ldap_user_filter must contain {username}")

    # -- derived ----------------------------------------------------------------------------
    @property
    def hook_url(self) -> str:
        return f"{self.base_url}/internal/hooks"

    def repo_url(self, team: str, project: str) -> str:
        return f"{self.base_url}/git/{team}/{project}.git"

    def slurm_account(self, team: str) -> str:
        """The Slurm account of a team (fair share between teams)."""
        return f"{self.slurm_account_prefix}{team}"

    def job_events_url(self, job_id: int) -> str:
        return f"{self.base_url}/internal/jobs/{job_id}/events"

    def ensure_dirs(self) -> None:
        # Job users (on the nodes) traverse the data and jobs dirs (0711) to reach their own
        # 0700 job dir; repositories and LFS objects are served over HTTP only (0700); an older
        # install's looser modes are tightened (portal/private_files.py says what is private).
        from .private_files import secure_layout

        secure_layout(self.data_dir, self.jobs_dir, self.repos_root, self.lfs_root)

    def remember_served_url(self) -> None:
        """Record the public URL the server serves on (``<data_dir>/served_base_url``, 0600),
        so the CLI and a separate reconciler print and hand jobs the same URL."""
        from .private_files import create_private_file

        path = self.data_dir / SERVED_URL_FILE
        tmp = path.with_name(f".{SERVED_URL_FILE}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        create_private_file(tmp, (self.base_url + "\n").encode())
        os.replace(tmp, path)

    def ensure_secrets(self) -> None:
        """Fill hook_secret / secret_key from the data dir, generating them once (mode 0600);
        an unset base_url becomes the URL the server last served on (remember_served_url)."""
        if not self.base_url_is_set:
            try:
                served = (self.data_dir / SERVED_URL_FILE).read_text().strip()
            except OSError:
                served = ""
            if served.startswith(("http://", "https://")):
                self.base_url = served.rstrip("/")
        if not self.hook_secret:
            self.hook_secret = _persisted_secret(self.data_dir / "hook_secret")
        if not self.secret_key:
            self.secret_key = _persisted_secret(self.data_dir / "secret_key")


def _persisted_secret(path: Path) -> str:
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    from .private_files import create_private_file, make_dir

    if not path.parent.is_dir():
        make_dir(path.parent)
    value = secrets.token_urlsafe(32)
    try:
        create_private_file(path, value.encode())
    except FileExistsError:  # another process made it first: use theirs (once it is written)
        for _ in range(100):
            theirs = path.read_text().strip()
            if theirs:
                return theirs
            time.sleep(0.01)
        raise ConfigError(f"{path} exists but is empty; delete it to have a new secret made")
    return value


# -- parsing -----------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _parse_map(raw: Any, conv, key: str) -> dict:
    if isinstance(raw, Mapping):
        items = raw.items()
    else:
        items = []
        for part in str(raw).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" not in part:
                raise ConfigError(f"{key}: expected TYPE:VALUE pairs like a4000:4, got {part!r}")
            k, v = part.split(":", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        try:
            out[str(k)] = conv(str(v))
        except (ValueError, InvalidOperation):
            raise ConfigError(f"{key}: bad value {v!r} for {k!r}") from None
    return out


def _convert(key: str, raw: Any) -> Any:
    if key == "gpu_limits":
        return _parse_map(raw, int, key)
    if key == "node_addresses":
        return _parse_map(raw, str, key)
    if key == "gpu_rates":
        return _parse_map(raw, Decimal, key)
    f = _FIELDS[key]
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if "Decimal" in typ:
            return Decimal(str(raw))
        if typ == "float":
            return float(raw)
        if typ == "int":
            return int(raw)
        if "Path" in typ:
            return Path(str(raw))
    except (ValueError, InvalidOperation):
        raise ConfigError(f"{key}: bad value {raw!r}") from None
    return str(raw)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        return dict(data.get("slipway", data))
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section("slipway"):
        raise ConfigError(f"config file {path} has no [slipway] section")
    return dict(parser.items("slipway"))


def load_config(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the Config from ``env`` (default os.environ), the file it names, and overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    cfg_file = overrides.pop("config_file", None) or env.get(ENV_PREFIX + "CONFIG")
    if cfg_file:
        for k, v in _read_file(Path(cfg_file)).items():
            k = k.lower()
            if k not in _FIELDS:
                raise ConfigError(f"config file {cfg_file}: unknown key {k!r}")
            values[k] = _convert(k, v)
    for name in _FIELDS:
        ev = env.get(ENV_PREFIX + name.upper())
        if ev is not None and ev != "":
            values[name] = _convert(name, ev)
    for k, v in overrides.items():
        if k not in _FIELDS:
            raise ConfigError(f"unknown config key {k!r}")
        values[k] = v
    return Config(**values)
