"""The ``Mailer`` port over SMTP (standard library ``smtplib``).

One connection per message to ``host:port``, with a timeout on every socket operation; STARTTLS
(with the server's certificate checked against the system's CAs) when ``starttls``; login when
``username`` is set. A server that is down, slow or refuses the message never raises into the
caller: ``send`` logs it, counts it (``failures``, ``last_error``) and answers False, so the
reconciler's tick goes on (the notifications outbox retries later)."""
from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

log = logging.getLogger("slipway.mail")


def _one_line(text: str) -> str:
    """A header value on one line (a subject or address never splits into more headers)."""
    return " ".join(str(text).split())


_LOCAL = r"[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})*\Z")


def valid_address(address: str) -> bool:
    """``user@host`` alone (ASCII; ``root@localhost`` too): no display name, no list, no
    whitespace, quotes or control characters."""
    return isinstance(address, str) and len(address) <= 254 and bool(_ADDRESS.match(address))


class SmtpMailer:
    """Hands each message to the SMTP server at ``host:port`` (plain, or STARTTLS when
    ``starttls``; login when ``username`` is set)."""

    def __init__(self, host: str = "localhost", port: int = 25, *, sender: str = "slipway@localhost",
                 username: str = "", password: str = "", starttls: bool = False,
                 timeout_s: float = 10.0):
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password, self.starttls = username, password, starttls
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.sent = 0                   # messages the server took
        self.failures = 0               # messages it did not (down, refused, timed out)
        self.last_error: str | None = None

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, to, _one_line(subject)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        domain = self.sender.rpartition("@")[2] or None
        msg["Message-ID"] = make_msgid(domain=domain)
        msg.set_content(body)
        return msg

    def tls_context(self) -> ssl.SSLContext:
        """The server's certificate is checked (system CAs, host name): a password never goes
        to a server that only claims to be the configured one."""
        return ssl.create_default_context()

    def deliver(self, msg: EmailMessage) -> None:
        """Hand ``msg`` over (raises what smtplib raises)."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=self.tls_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(msg)

    def send(self, to: str, subject: str, body: str) -> bool:
        """Send a plain-text message to ``to``. True when the server took it; False (logged and
        counted, never raised) when the address is unusable or the server is down or refused."""
        if not valid_address(to):
            return self._failed(to, f"not a usable email address: {to!r}")
        try:
            self.deliver(self.message(to, subject, body))
        except Exception as exc:  # noqa: BLE001 — down, refused, timed out, bad TLS: never raised
            return self._failed(to, f"{type(exc).__name__}: {exc}"
                                    f" (SMTP server {self.host}:{self.port})")
        with self._lock:
            self.sent += 1
        return True

    def _failed(self, to: str, why: str) -> bool:
        with self._lock:
            self.failures += 1
            self.last_error = why
        log.warning("mail to %s not sent: %s", to, why)
        return False
