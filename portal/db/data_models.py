"""The data domain's tables (migration 0007) and the workspaces' policy (0008): data repositories (datasets and models) with
numbered immutable versions, their files, sharing, resumable uploads, a job's input bindings.

Bytes never live in the database: a version's files are content-addressed objects on disk
(``portal/data/store.py``); the rows say which path of which version is which object.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, Team, UTCDateTime, utcnow

DATA_KINDS = ("dataset", "model")
UPLOAD_STATES = ("open", "committed", "aborted")


class DataRepo(Base):
    __tablename__ = "data_repos"
    __table_args__ = (
        UniqueConstraint("team_id", "name", name="uq_data_repos_team_name"),
        CheckConstraint("kind IN ('dataset', 'model')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # version numbers are never reused, even after a version is deleted
    next_version: Mapped[int] = mapped_column(Integer, default=1)

    team: Mapped[Team] = relationship()
    versions: Mapped[list[DataVersion]] = relationship(
        back_populates="repo", cascade="all, delete-orphan", passive_deletes=True,
        order_by="DataVersion.number")
    shares: Mapped[list[DataShare]] = relationship(cascade="all, delete-orphan",
                                                   passive_deletes=True)


class DataVersion(Base):
    __tablename__ = "data_versions"
    __table_args__ = (UniqueConstraint("repo_id", "number", name="uq_data_versions_repo_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("data_repos.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "upload", "web upload", "job 42" (what made it), and the job when it came from one
    source: Mapped[str] = mapped_column(String(255), default="upload")
    source_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    repo: Mapped[DataRepo] = relationship(back_populates="versions")
    files: Mapped[list[DataFile]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                 order_by="DataFile.path")


class DataFile(Base):
    __tablename__ = "data_files"
    __table_args__ = (
        UniqueConstraint("version_id", "path", name="uq_data_files_version_path"),
        Index("ix_data_files_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("data_versions.id", ondelete="CASCADE"),
                                            index=True)
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class DataShare(Base):
    """Read-only access to a repository for another team."""

    __tablename__ = "data_shares"

    repo_id: Mapped[int] = mapped_column(ForeignKey("data_repos.id", ondelete="CASCADE"),
                                         primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                         primary_key=True, index=True)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataUpload(Base):
    """A resumable upload: a manifest of files (path, size, sha256) whose objects arrive in
    chunks; ``commit`` turns it into a version, never before every object is complete."""

    __tablename__ = "data_uploads"
    __table_args__ = (CheckConstraint("state IN ('open', 'committed', 'aborted')", name="state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("data_repos.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    manifest: Mapped[str] = mapped_column(Text)          # JSON [{path, size, sha256}]
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(255), default="upload")
    state: Mapped[str] = mapped_column(String(16), default="open")
    version_number: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobInput(Base):
    """What a job binds at /input<slot>: a data version or an earlier job's kept output."""

    __tablename__ = "job_inputs"
    __table_args__ = (
        CheckConstraint("slot >= 0 AND slot <= 4", name="slot"),
        Index("ix_job_inputs_version_id", "version_id"),
        Index("ix_job_inputs_source_job_id", "source_job_id"),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    # no FKs: a deleted version or output leaves the finished job's record readable
    version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # as resolved at push time: "vision/cifar-100:2" or "job:42"
    label: Mapped[str] = mapped_column(String(255))


class WorkspacePolicy(Base):
    """The idle policy and caps of workspaces (migration 0008): one row per team that overrides
    the cluster's, and the cluster's own row (``team_id`` NULL). A NULL field: the next level's
    value (team → cluster → built-in default, ``portal.workspaces.policy``)."""

    __tablename__ = "workspace_policies"
    __table_args__ = (UniqueConstraint("team_id", name="uq_workspace_policies_team_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                                nullable=True)
    idle_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remind_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto_stop: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    max_per_user: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
