"""Real receivers on 127.0.0.1 for the notification tests: an HTTP server taking webhook POSTs (answering as
told: 200, 500, or not at all in time) and an SMTP server with STARTTLS and AUTH (aiosmtpd, a CA of its
own from trustme)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class HttpReceiver:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                receiver.posts.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "json": json.loads(body or b"null"),
                        "at": time.time(),  # when the answer went back
                    }
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [str(p["json"].get("text", "")) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def http_receiver(status: int = 200, delay: float = 0.0) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(status, delay)
    try:
        yield receiver
    finally:
        receiver.close()


class SmtpReceiver:
    """An SMTP server that requires STARTTLS then AUTH (user/password), keeping what it receives."""

    user, password = "runbook", "smtp-s3cret-pw"

    def __init__(self, directory: Path) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ca = trustme.CA()
        server_cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        self.ca_file = directory / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.messages: list[dict[str, Any]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.messages.append(
                    {
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "data": envelope.content.decode("utf-8", "replace"),
                        "tls": session.ssl is not None,
                        "authenticated": session.authenticated,
                    }
                )
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            ) == (receiver.user, receiver.password)
            return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535 itself

        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=True,
        )
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
