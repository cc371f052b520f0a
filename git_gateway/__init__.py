"""git_gateway: Slipway's adapter that speaks git (no Flask, no database).

    repos    bare repositories: create/configure/delete, disk usage, read a file at a commit
    http     GitHttpApp (WSGI: git smart HTTP via ``git http-backend`` + git-lfs), Principal,
             AccessDenied
    lfs      LFS batch API and the sha256-checked object store
    hooks    installs the pre-/post-receive hooks: hook_script.sh (bash, the text callback read
             by hook_wire) and the Python hook program it hands over to (hook_program.py,
             stdlib only)
    hook_listener  the hooks' callback answered in the gateway's own process (loopback, a
             thread per callback: pushes never starve their hooks of web-server threads)
    node/    the node-side job program (standard library only, installed on the compute
             nodes): ``python -m git_gateway.node.runner SPEC.json`` (runner), commit-back of a
             job's files (results), result-commit trailers (trailers); see its __init__
"""
from .http import AccessDenied, GitHttpApp, Principal  # noqa: F401

__all__ = ["AccessDenied", "GitHttpApp", "Principal"]
