"""Real local receivers for alert tests: an HTTP webhook receiver and an SMTP receiver on 127.0.0.1.

    with WebhookReceiver() as teams, SmtpReceiver() as smtp:
        channels = AlertChannels(teams_webhook_url=teams.url("/workflows/abc"), smtp_host=smtp.host,
                                 smtp_port=smtp.port, smtp_from="dagster@atom.test", smtp_to=["a@atom.test"])
        ...
        teams.answer(500, "Internal Server Error")   # every later POST gets this answer
        assert [post.json for post in teams.posts] == [...]

``WebhookReceiver`` records every POST (path, headers, raw body, parsed JSON) and answers with the status
and body it was told (200 "ok" by default, as Slack answers; Teams Workflows answers 202, a legacy Teams
connector 200 "1"). A POST is recorded whatever the answer, so a test sees failed attempts too.

``SmtpReceiver`` is aiosmtpd's real SMTP server (``aiosmtpd.controller.Controller``) recording each
message (envelope from/to, subject, body). Optional: STARTTLS with a certificate for 127.0.0.1 from a
``trustme`` CA (the test makes clients trust it), AUTH with one login/password (535 otherwise, as real
servers answer), and a scripted refusal of DATA (e.g. ``"451 4.3.0 try again later"``).
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import ThreadingHTTPServer
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from atom_pipelines_tests.servers.http import BackgroundServer, QuietHandler


@dataclass(frozen=True)
class ReceivedPost:
    """One POST as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(BackgroundServer):
    """An HTTP server on 127.0.0.1 (a free port) that records every POST and answers the status it is told."""

    def __init__(self, status: int = 200, body: str = "ok") -> None:
        self._lock = threading.Lock()
        self._posts: list[ReceivedPost] = []
        self._answer = (status, body)
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    status, text = receiver._answer
                    receiver._posts.append(ReceivedPost(self.path, dict(self.headers.items()), body, status))
                payload = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._serve_in_background(ThreadingHTTPServer(("127.0.0.1", 0), Handler), "webhook-receiver")

    # -- control -------------------------------------------------------------------------------------------

    def answer(self, status: int, body: str = "") -> None:
        """Answer every later POST with this status and body."""
        with self._lock:
            self._answer = (status, body)

    @property
    def posts(self) -> list[ReceivedPost]:
        with self._lock:
            return list(self._posts)

    def accepted(self) -> list[ReceivedPost]:
        """The POSTs answered with a 2xx status."""
        return [post for post in self.posts if 200 <= post.status < 300]

    def url(self, path: str = "/webhook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the SMTP server took it."""

    mail_from: str
    rcpt_tos: list[str]
    subject: str
    body: str
    message: EmailMessage


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd hook
        with self._receiver._lock:
            refusal = self._receiver._refusal
        if refusal:
            return refusal
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain",))
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            subject=str(message["Subject"] or ""),
            body=body.get_content() if body is not None else "",
            message=message,
        )
        with self._receiver._lock:
            self._receiver._messages.append(mail)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 (a free port), recording every message it accepts.

    tls_context: offer STARTTLS with this server context, and require it before MAIL. login: require AUTH
    with exactly this (user, password) pair.
    """

    def __init__(self, tls_context: ssl.SSLContext | None = None, login: tuple[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._refusal: str | None = None
        self._tls_context = tls_context
        self._login = login
        self._controller: Controller | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def refuse(self, reply: str | None) -> None:
        """Answer DATA with this SMTP reply (e.g. ``"451 4.3.0 try again later"``); None accepts again."""
        with self._lock:
            self._refusal = reply

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self._login is not None:
            given = (auth_data.login.decode("utf-8"), auth_data.password.decode("utf-8"))
            if given == self._login:
                return AuthResult(success=True)
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid" itself.
        return AuthResult(success=False, handled=False)

    def __enter__(self) -> Self:
        smtp_settings: dict[str, Any] = {}
        if self._tls_context is not None:
            smtp_settings.update(tls_context=self._tls_context, require_starttls=True)
        if self._login is not None:
            smtp_settings.update(authenticator=self._authenticate, auth_required=True)
        last_error: Exception | None = None
        for _ in range(5):  # another process may take the probed port before we bind it
            self.port = _free_port()
            controller = Controller(_Handler(self), hostname=self.host, port=self.port, **smtp_settings)
            try:
                controller.start()
            except (OSError, RuntimeError) as exc:
                last_error = exc
                continue
            self._controller = controller
            return self
        raise RuntimeError(f"could not start the SMTP receiver: {last_error}")

    def __exit__(self, *exc_info: object) -> None:
        if self._controller is not None:
            self._controller.stop()
