"""git_gateway: Slipway's adapter that speaks git (no Flask, no database).

    repos    bare repositories: create/configure/delete, disk usage, read a file at a commit
    http     GitHttpApp (WSGI: git smart HTTP via ``git http-backend`` + git-lfs), Principal,
             AccessDenied
    lfs      LFS batch API and the sha256-checked object store
    hooks    installs the pre-/post-receive hook program (hook_program.py, stdlib only)
    results  commit-back of a job's files (results/<branch>/<job>, then the branch with a lease)
    runner   ``python -m git_gateway.runner SPEC.json``: the node-side job program
    testserver  helpers to serve the app in tests
"""
from .http import AccessDenied, GitHttpApp, Principal  # noqa: F401

__all__ = ["AccessDenied", "GitHttpApp", "Principal"]
