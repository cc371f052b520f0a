"""Slipway configuration: one dataclass, read from SLIPWAY_* environment variables and an
optional config file (``SLIPWAY_CONFIG``: TOML, or INI with a ``[slipway]`` section).

Precedence: explicit keyword overrides > environment > config file > defaults.

The keys, what each means and its default: ``portal/config_parse.py`` (file key = env var
without the ``SLIPWAY_`` prefix, lower-case).
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from .config_parse import ConfigError, convert, read_file

ENV_PREFIX = "SLIPWAY_"

DEFAULT_GPU_LIMITS = {"a4000": 4, "a6000": 2}
DEFAULT_GPU_RATES = {"a4000": Decimal("0.50"), "a6000": Decimal("1.00")}
DEFAULT_GPU_SHARDS = {"a6000": 8}
SHARD_SUFFIX = "-shard"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
SERVED_URL_FILE = "served_base_url"
MAX_WARNING_S = 65535   # sbatch --signal=...@N takes at most 0xffff seconds


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
    # shared GPU types and shards per GPU (docs/SHARING.md; must match the cluster's gres.conf):
    # each gives a job GPU type "<type>-shard" (limit: one GPU's shards, rate: the GPU's / shards)
    gpu_shards: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GPU_SHARDS))
    max_sweep_tasks: int = 100
    max_nodes: int = 2            # nodes per job when no node inventory was sampled yet
    storage_rate: Decimal = Decimal("0.10")
    cpu_rate: Decimal = Decimal("0.02")
    cpu_limit: int = 16
    mem_limit_mb: int = 65536
    min_start_balance: Decimal = Decimal("1.00")
    container_runtime: str = "charliecloud"
    partition: str = "train"
    cluster_name: str = "slipway"
    reconcile_interval: float = 5.0
    reconcile_busy_interval: float = 0.5
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window: float = 300.0
    session_lifetime_hours: float = 168.0
    trusted_proxies: int = 0
    cancel_grace: float = 60.0
    stale_reservation: float = 300.0
    orphan_reservation_grace: float = 30.0
    unknown_submission_grace: float = 30.0
    storage_interval: float = 600.0
    lost_after: float = 600.0
    account_sync_interval: float = 60.0
    slurm_account_prefix: str = "team-"
    # the partitions' TRESBillingWeights (slurm_conf templates): the team balance is mirrored
    # into GrpTRESMins=billing with them (policy/budget.py); "" switches the mirror off
    slurm_billing_weights: str = "CPU=1.0,GRES/gpu:a4000=10.0,GRES/gpu:a6000=20.0,GRES/shard=2.5"
    # turn-taking between teams (policy/turns.py): a pending job's nice is its rank among its
    # team's pending jobs (at most turn_rank_cap) x turn_nice_step; 0 switches turns off
    # Slurm's DefMemPerCPU (slurm_conf templates): a job without mem= gets this per core
    default_mem_per_cpu_mb: int = 1000
    turn_nice_step: int = 10000
    turn_rank_cap: int = 10
    accounting_slack: float = 300.0
    node_python: str = field(default_factory=lambda: _default_node_python())
    default_image: str = "python"
    default_time_limit: int = 60
    # seconds before its time limit a job gets SIGUSR1 (--signal=B:USR1@N; at most a quarter
    # of the limit) to checkpoint and have its files pushed (docs/FAULTS.md); 0: no warning
    time_limit_warning_s: int = 120
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
    smtp_host: str = ""          # "": no mail (reminders only on the portal's pages)
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "slipway@localhost"
    workspace_url: str = ""      # the workspace gateway's public base; "": portal host, port+1
    # monitoring (docs/MONITORING.md)
    metrics_token: str = ""      # Bearer token for /metrics ("": only metrics_allow may scrape)
    # networks that may scrape /metrics without the token; none by default: behind a reverse
    # proxy on the same host every visitor would look like 127.0.0.1 (docs/MONITORING.md)
    metrics_allow: str = ""
    usage_sample_interval: float = 30.0   # seconds between sstat samples of running jobs
    sample_minutes_days: int = 7       # 1-minute cluster samples kept this long, then hourly
    sample_hours_days: int = 365       # hourly samples kept this long
    alarm_balance_threshold: Decimal = Decimal("5.00")   # a team balance under this: an alarm
    alarm_failed_jobs: int = 5         # this many jobs failed within alarm_failed_window_s
    alarm_failed_window_s: float = 600.0
    alarm_reconcile_lag_s: float = 60.0   # no completed tick for this long: "falling behind"
    alarm_storage_fraction: float = 0.9   # a team's storage above this share of its quota

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
        self._derive_shard_types()
        if not 1 <= self.max_sweep_tasks <= 100_000 or not 1 <= self.max_nodes <= 64:
            raise ConfigError("max_sweep_tasks must be 1..100000 and max_nodes 1..64")
        for gpu_type in self.gpu_limits:
            if gpu_type not in self.gpu_rates:
                raise ConfigError(f"gpu_rates has no hourly rate for GPU type {gpu_type!r}")
            if gpu_type in ("none", "cpu"):
                raise ConfigError(f"{gpu_type!r} cannot be a GPU type: gpus=none asks for a "
                                  "CPU-only job, billed as 'cpu' at cpu_rate")
        try:
            self.cpu_rate = Decimal(str(self.cpu_rate))
        except ArithmeticError:
            raise ConfigError(f"cpu_rate must be a US$ amount, not {self.cpu_rate!r}") from None
        if not self.cpu_rate.is_finite() or self.cpu_rate < 0:
            raise ConfigError(f"cpu_rate must be a US$ amount >= 0, not {self.cpu_rate}")
        if not 1 <= self.cpu_limit <= 1024:
            raise ConfigError(f"cpu_limit must be between 1 and 1024 cores, not {self.cpu_limit}")
        if not 0 <= self.turn_nice_step <= 1_000_000 or not 1 <= self.turn_rank_cap <= 1000:
            raise ConfigError("turn_nice_step must be 0..1000000 and turn_rank_cap 1..1000")
        if not 0 <= self.time_limit_warning_s <= MAX_WARNING_S:
            raise ConfigError(f"time_limit_warning_s must be 0 (no warning) to {MAX_WARNING_S} "
                              f"seconds (Slurm's --signal limit), not {self.time_limit_warning_s}")
        if not 0 < self.session_lifetime_hours <= 24 * 366:
            raise ConfigError("session_lifetime_hours must be more than 0 and at most a year "
                              f"(8784), not {self.session_lifetime_hours}")
        if self.mem_limit_mb < 1:
            raise ConfigError(f"mem_limit_mb must be at least 1, not {self.mem_limit_mb}")
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

    def _derive_shard_types(self) -> None:
        """``gpu_shards {"a6000": 8}`` → job GPU type ``a6000-shard``: at most 8 per job (one
        GPU's shards), billed at the a6000's rate / 8 per shard-hour (docs/SHARING.md)."""
        self.gpu_limits, self.gpu_rates = dict(self.gpu_limits), dict(self.gpu_rates)
        self.gpu_shards = dict(self.gpu_shards)
        for gpu_type, shards in list(self.gpu_shards.items()):
            if gpu_type not in self.gpu_limits:   # a site without that type: nothing to share
                del self.gpu_shards[gpu_type]
                continue
            if gpu_type not in self.gpu_rates:
                raise ConfigError(f"gpu_shards names {gpu_type!r}, which gpu_rates has no rate "
                                  "for: only a priced GPU type can be shared")
            if not isinstance(shards, int) or not 2 <= shards <= 128:
                raise ConfigError(f"gpu_shards: {gpu_type} must be shared into 2 to 128 shards, "
                                  f"not {shards!r}")
            name = gpu_type + SHARD_SUFFIX
            self.gpu_limits.setdefault(name, shards)
            self.gpu_rates.setdefault(name, Decimal(self.gpu_rates[gpu_type]) / shards)

    def shards_of(self, gpu_type: str) -> tuple[str, int] | None:
        """``a6000-shard`` → ("a6000", 8); None for a type that is not a share of a GPU."""
        if gpu_type.endswith(SHARD_SUFFIX) and gpu_type[:-len(SHARD_SUFFIX)] in self.gpu_shards:
            base = gpu_type[:-len(SHARD_SUFFIX)]
            return base, self.gpu_shards[base]
        return None

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


def _convert(key: str, raw: Any) -> Any:
    return convert(key, raw, _FIELDS[key].type)


def load_config(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the Config from ``env`` (default os.environ), the file it names, and overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    cfg_file = overrides.pop("config_file", None) or env.get(ENV_PREFIX + "CONFIG")
    if cfg_file:
        for k, v in read_file(Path(cfg_file)).items():
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
