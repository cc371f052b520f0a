"""How Slipway's configuration keys are read (``portal.config.load_config`` uses these),
and what each key means.

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
gpu_shards                  shared GPU types: shards per GPU (must      a6000:8 ("none":
                            match gres.conf; "none": none shared)       no sharing)
                            match gres.conf); each adds job type
                            TYPE-shard (limit = shards, rate = GPU's
                            rate / shards): docs/SHARING.md
max_sweep_tasks             most tasks one sweep (-o sweep=) may have   100
max_nodes                   most nodes per job before a node inventory  2
                            was sampled (then: nodes with the type)
metrics_token               Bearer token Prometheus sends for /metrics  "" (only metrics_allow)
metrics_allow               networks that may scrape /metrics without   "" (none: the token
                            the token (comma-separated CIDRs)           is needed)
usage_sample_interval       seconds between two sstat samples of the    30
                            running jobs' CPU and memory (ONE call)
sample_minutes_days         days 1-minute cluster samples are kept      7
sample_hours_days           days hourly cluster samples are kept        365
alarm_balance_threshold     a team balance under this opens an alarm    5.00
alarm_failed_jobs           failed jobs within alarm_failed_window_s    5
                            that open a "burst of failed jobs" alarm
alarm_failed_window_s       that window, in seconds                     600
alarm_reconcile_lag_s       seconds without a finished reconciler tick  60
                            before "the reconciler is falling behind"
alarm_storage_fraction      share of a storage quota that opens an      0.9
                            alarm
storage_rate                US$ per GB-month of storage                 0.10
min_start_balance           a job starts only when balance >= this      1.00
container_runtime           ``charliecloud`` (local) | ``apptainer``    charliecloud
images_root                 where container images live (SIFs for       container_images'
                            apptainer; ch-run directory images)         default cache
partition                   Slurm partition ("" = cluster default)      train
cluster_name                name of the Slurm cluster                   slipway
reconcile_interval          seconds between reconciler ticks            5
reconcile_busy_interval     seconds between ticks while a job is ending 0.5
                            (finishing, cancel pending, sacct settling)
login_max_failures          free failed logins per (account, address)  5
                            before that address waits 1, 2, 4 … 60 s
                            between tries (429); 4x this per account
                            slows only addresses that have failed
login_max_failures_per_address  the same per client address             20
login_failure_window        seconds after its last failure a count     300
                            is forgotten
session_lifetime_hours      hours a portal login lasts (logging out     168
                            ends it at once, for every copy of its
                            cookie)
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
slurm_billing_weights       the partitions' TRESBillingWeights: the      CPU=1.0,GRES/gpu:a4000=10.0,
                            team balance is mirrored into Slurm's       GRES/gpu:a6000=20.0,
                            GrpTRESMins=billing with them ("" = off)    GRES/shard=2.5
default_mem_per_cpu_mb      Slurm's DefMemPerCPU (what a job without     1000
                            mem= gets per core; said when it runs out)
turn_nice_step              nice per place in a team's own queue         10000
                            (turn-taking between teams; 0 = off)
turn_rank_cap               places counted for turn-taking               10
accounting_slack            seconds subtracted from the oldest submit   300
                            time for the bounded ``sacct -S`` window
node_python                 python on the compute nodes that runs       /usr/bin/python3
                            ``-m git_gateway.node.runner`` (stdlib only;
                            imported from <data_dir>/node)
default_image               image when a project names none             python
default_time_limit          minutes when a project names none           60
time_limit_warning_s        seconds before its time limit a job gets    120
                            SIGUSR1 (``--signal=B:USR1@N``, at most a
                            quarter of the limit; Slurm may send it up
                            to 60 s earlier): the entrypoint may
                            checkpoint, then is stopped and its files
                            pushed before the limit (docs/FAULTS.md);
                            0 = no warning
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
cpu_rate                    US$ per core-hour of a CPU-only job (no    0.02
                            GPU: ``gpus=none``), from AllocTRES cpu=
cpu_limit                   most cores one job may ask for (``cpus=N``) 16
mem_limit_mb                most memory (MB) one job may ask for        65536
                            (``mem=16G``)
smtp_host, smtp_port        the SMTP server mail (workspace reminders)  "" (no mail), 25
                            goes through
smtp_starttls,              STARTTLS; login                             false, "", ""
smtp_username/_password
mail_from                   the sender of Slipway's mail                slipway@localhost
workspace_url               public base URL of the workspace gateway    http://<base_url's
                            (``slipway serve --workspace-port``); put   host>:<port+1>
                            it on its own host name in production
==========================  ==========================================  =====================

Maps (``gpu_limits``, ``gpu_rates``) are written ``a4000:4,a6000:2`` in env/INI, or as TOML tables.
"""
from __future__ import annotations

import configparser
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    pass


def parse_map(raw: Any, conv, key: str) -> dict:
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


def convert(key: str, raw: Any, field_type: Any) -> Any:
    """``raw`` (text from env/INI, or a TOML value) -> the value of ``key`` (its dataclass type)."""
    if key == "gpu_limits":
        return parse_map(raw, int, key)
    if key == "gpu_shards":   # "none": no GPU type is shared
        return {} if str(raw).strip().lower() == "none" else parse_map(raw, int, key)
    if key == "node_addresses":
        return parse_map(raw, str, key)
    if key == "gpu_rates":
        return parse_map(raw, Decimal, key)
    typ = field_type if isinstance(field_type, str) else getattr(field_type, "__name__", str(field_type))
    if typ == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{key}: write true or false, not {raw!r}")
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


def read_file(path: Path) -> dict[str, Any]:
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
