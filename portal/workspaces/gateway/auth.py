"""Who is asking the workspace gateway: the portal's login session, read from its cookie
(``portal.identity.session_cookie``). Whether that session is still open, the user active and
allowed to see the workspace is ``resolve``'s question (``portal.cli.serve``).
"""
from __future__ import annotations

from ...identity.session_cookie import session_login  # noqa: F401  (the gateway's door)
