"""Slipway's database: SQLAlchemy 2 typed models.

Money is stored as integer micro-dollars (``*_micros`` BigInteger columns) and exposed as
``Decimal`` properties — never float. The initial Alembic migration
(``portal/migrations/versions/0001_initial.py``) creates exactly these tables; a unit test
compares the migrated schema with this metadata.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

MICROS = Decimal(1_000_000)

# Job states that occupy a branch (at most one such job per (project, branch)).
ACTIVE_STATES = ("queued", "pending", "running", "finishing", "unknown")
ALL_STATES = ("queued", "pending", "running", "finishing", "succeeded", "failed", "cancelled", "unknown")
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATES))
_STATES_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ALL_STATES))

ROLES = ("user", "administrator", "owner")


def to_micros(amount: Decimal | int | str) -> int:
    """Dollars -> integer micro-dollars; refuses sub-micro-dollar precision silently lost."""
    d = Decimal(str(amount)) * MICROS
    q = d.to_integral_value()
    if q != d:
        raise ValueError(f"amount {amount} has more precision than a micro-dollar")
    return int(q)


def from_micros(micros: int | None) -> Decimal:
    return (Decimal(micros or 0) / MICROS).quantize(Decimal("0.000001"))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    unix_user: Mapped[str] = mapped_column(String(64))
    is_cluster_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Local accounts (no LDAP configured): a password hash; LDAP users: their DN, no hash.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    ldap_dn: Mapped[str | None] = mapped_column(String(512), nullable=True, default=None)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    # False when LDAP no longer lists the user: they cannot log in or push.
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")
    tokens: Mapped[list[AccessToken]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<User {self.name}>"


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # DN of the LDAP groupOfNames this team mirrors (None: managed in Slipway only).
    ldap_group: Mapped[str | None] = mapped_column(String(512), nullable=True, default=None)
    # Fair-share weight of the team's Slurm account.
    fairshare: Mapped[int] = mapped_column(Integer, default=100)
    # what sshare said at the last account sync (0009): Slurm's fair-share factor, usage
    fairshare_factor: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    usage_share: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    shares_sampled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # Data repositories + kept job outputs may use this many bytes (None: no quota; 0007).
    storage_quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)

    memberships: Mapped[list[Membership]] = relationship(back_populates="team", cascade="all, delete-orphan")
    projects: Mapped[list[Project]] = relationship(back_populates="team", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<Team {self.name}>"


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "team_id", name="uq_memberships_user_team"),
        CheckConstraint("role IN ('user', 'administrator', 'owner')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    team: Mapped[Team] = relationship(back_populates="memberships")


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_projects_team_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    gpu_type: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)
    image: Mapped[str] = mapped_column(String(128))
    time_limit_min: Mapped[int] = mapped_column(Integer, default=60)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # default input bindings, JSON {"input0": "vision/cifar-100:latest", ...} (0007)
    inputs: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    # the default compute type of its jobs (0009; None: gpu_type/gpu_count above)
    compute_type: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)

    team: Mapped[Team] = relationship(back_populates="projects")
    jobs: Mapped[list[Job]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                           passive_deletes=True)

    @property
    def repo_key(self) -> str:
        return f"{self.team.name}/{self.name}"


class AccessToken(Base):
    """A personal access token: only sha256(token) is stored; ``prefix`` narrows the lookup."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="default")
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_STATES_SQL, name="state"),
        # THE one-job-per-branch guarantee: concurrent pushes to one branch reserve one job.
        Index(
            "uq_jobs_active_branch",
            "project_id",
            "branch",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        # a project's newest jobs (migration 0003)
        Index("ix_jobs_project_id_id", "project_id", "id"),
        # per-project job counts / active counts / last job, index-only (migration 0003)
        Index("ix_jobs_project_state", "project_id", "state", "id"),
        # ids are never reused (migration 0005): billing keys charges by the Slipway job id, and
        # a deleted project's jobs leave their ledger rows behind. PostgreSQL sequences never
        # reuse either.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    branch: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str] = mapped_column(String(64))
    pusher_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    previous_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    slurm_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    gpu_type: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(128))
    time_limit_min: Mapped[int] = mapped_column(Integer)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Billing attempts: a requeued job starts a new attempt (new Slurm start time).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    attempt_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    results_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    results_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    branch_updated: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    results_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    hard_cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set while the reconciler holds the waiting job in Slurm because the team's balance is under
    # the start minimum ($1.00); cleared when it releases it (migration 0005).
    balance_hold_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # /output (migration 0007): "none" (before it is made), "open" (the job writes it), "kept"
    # (sealed after the job ended: read-only), "deleted". A continued job starts from the kept
    # output of ``continue_from``.
    output_state: Mapped[str] = mapped_column(String(16), default="none")
    output_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    output_files: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    output_kept_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    output_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    continue_from: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # "task" (runs slipway-entrypoint.sh) or "workspace" (JupyterLab; portal/workspaces, 0008):
    # the gateway's last proxied request, and when the idle reminder went out
    kind: Mapped[str] = mapped_column(String(16), default="task", server_default="task")
    # cores and memory asked for (a CPU-only job: gpu_type "cpu", gpu_count = its cores)
    cpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    mem_mb: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # policy (0009, docs/POLICY.md): the compute type, what was asked when the request was
    # adjusted down ("a4000 x8"), QOS and partition submitted with, Slurm's priority and
    # expected start while pending, how often an emergency job preempted it
    compute_type: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    asked: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    qos: Mapped[str] = mapped_column(String(64), default="normal", server_default="normal")
    partition: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    priority: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    expected_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    preempted_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # shapes (0010, docs/SHARING.md): a sweep's task count, its --array throttle and its values
    # (JSON list, one object per task); a multi-node job's nodes and its rendezvous port
    task_count: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    sweep: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    master_port: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)

    project: Mapped[Project] = relationship(back_populates="jobs")
    pusher: Mapped[User | None] = relationship()

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)

    @property
    def is_sweep(self) -> bool:
        return bool(self.task_count)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state} slurm={self.slurm_job_id}>"


class LedgerEntry(Base):
    """One line of a team's ledger. The balance is the sum of ``amount`` over the team's entries.

    Charges are negative, deposits positive. ``idempotency_key`` is unique: writing the same
    charge twice (biller re-run, two reconcilers, a restart) is a no-op.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # migration 0003: ledger pages / spending by date, and the balance SUM as an index-only scan
        Index("ix_ledger_entries_team_created", "team_id", "created_at"),
        Index("ix_ledger_entries_team_amount", "team_id", "amount_micros"),
        # migration 0005: a job attempt's / a resource's billing watermark, without a ledger scan
        Index("ix_ledger_entries_resource", "resource", "kind", "to_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # no FK: a deleted project's jobs vanish, their charges stay
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resource: Mapped[str | None] = mapped_column(String(255), nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # storage charges: the rounding remainder passed on to the resource's next charge, in units
    # of 1/(10**9 * 43,200) micro-dollar (accounting.storage; migration 0005)
    carry: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)

    team: Mapped[Team] = relationship()

    @property
    def amount(self) -> Decimal:
        return from_micros(self.amount_micros)

    @property
    def rate(self) -> Decimal | None:
        return None if self.rate_micros is None else from_micros(self.rate_micros)


class TeamBalance(Base):
    """A team's running balance: ``SUM(amount_micros)`` over its ledger entries, maintained by
    database triggers (migration 0004) in the same transaction as every ledger write — never
    written by the application. A team without entries has no row (balance 0)."""

    __tablename__ = "team_balances"

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    balance_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ReconcilerState(Base):
    """Small key/value store for the reconciler (last tick, last storage billing, ...)."""

    __tablename__ = "reconciler_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
