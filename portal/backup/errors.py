"""The one error of backup and restore: a message for the operator, nothing changed."""
from __future__ import annotations


class BackupError(Exception):
    """Backup or restore refused or failed; the message says why and what to do. Whatever the
    operation had made is removed before this is raised (no half backup, no half restore)."""
