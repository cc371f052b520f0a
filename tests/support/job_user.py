"""The unprivileged Unix user container tests run jobs as: sw-alice when the tests run as root
(the local cluster's test user), else whoever runs them."""
from __future__ import annotations

import os
import pwd

import pytest

JOB_USER = "sw-alice"


def job_user_or_skip(name: str = JOB_USER) -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid())
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"the tests run as root and there is no Unix user {name} to run jobs as")
