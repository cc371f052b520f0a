"""The ``Mailer`` port over SMTP (standard library ``smtplib``)."""
from __future__ import annotations

import smtplib
from email.message import EmailMessage


class SmtpMailer:
    """Hands each message to the SMTP server at ``host:port`` (plain, or STARTTLS when
    ``starttls``; login when ``username`` is set)."""

    def __init__(self, host: str = "localhost", port: int = 25, *, sender: str = "slipway@localhost",
                 username: str = "", password: str = "", starttls: bool = False,
                 timeout_s: float = 10.0):
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password, self.starttls = username, password, starttls
        self.timeout_s = timeout_s

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, to, subject
        msg.set_content(body)
        return msg

    def send(self, to: str, subject: str, body: str) -> None:
        msg = self.message(to, subject, body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(msg)
