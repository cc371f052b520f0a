"""The ``Git`` port on git_gateway.repos: the projects' bare repositories under
``config.repos_root`` (LFS objects under ``config.lfs_root``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

from git_gateway import repos
from git_gateway.sweep_merge import MergeResult, merge_tasks

from ..config import Config
from ..integrations import ENTRYPOINT


class GitRepos:
    def __init__(self, config: Config):
        self.config = config

    def create_repo(self, team: str, project: str) -> Path:
        return repos.create_repo(self.config.repos_root, team, project, python=sys.executable,
                                 exist_ok=True)

    def refresh_hooks(self) -> int:
        """After an upgrade: every repository's hooks as this version writes them."""
        return repos.refresh_hooks(self.config.repos_root, python=sys.executable)

    def delete_repo(self, team: str, project: str) -> bool:
        return repos.delete_repo(self.config.repos_root, team, project, lfs_root=self.config.lfs_root)

    def repo_bytes(self, team: str, project: str) -> int:
        return repos.disk_usage(self.config.repos_root, team, project,
                                lfs_root=self.config.lfs_root).total_bytes

    def entrypoint_problem(self, team: str, project: str, sha: str,
                           quarantine: str | None = None) -> str | None:
        """None when slipway-entrypoint.sh is a regular file at ``sha``; else a user message."""
        try:
            return repos.check_entrypoint(self.config.repos_root, team, project, sha,
                                          quarantine=quarantine)
        except ValueError as exc:
            return f"slipway: cannot read {ENTRYPOINT} at {sha[:12]}: {exc}"

    def resolve_ref(self, team: str, project: str, ref: str) -> str | None:
        return repos.resolve_ref(self.config.repos_root, team, project, ref)

    def delete_ref(self, team: str, project: str, ref: str) -> bool:
        return repos.delete_ref(self.config.repos_root, team, project, ref)

    def merge_sweep(self, team: str, project: str, *, branch: str, base: str,
                    tasks: Mapping[int, str], job_id: int) -> MergeResult:
        return merge_tasks(repos.repo_path(self.config.repos_root, team, project), branch=branch,
                           base=base, tasks=tasks, folder=f"sweep-{job_id}",
                           message=f"slipway: results of sweep job {job_id}", job_id=job_id)
