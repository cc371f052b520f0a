"""The portal's login sessions, server side (migration 0016): the signed cookie carries a random
session id besides the user id, and a session is only as live as its row here. Logging out
deletes the row, so a copied cookie is worth nothing afterwards (Flask's cookie alone would stay
valid until it expires)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime


class WebSession(Base):
    """One logged-in browser: ``sid_hash`` is sha256 of the id in its cookie (the id itself is
    never stored); ``created_at`` bounds its life (``session_lifetime_hours``)."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
