"""Notification channels: a Slack-compatible incoming webhook (Mattermost and Discord take the same shape),
a JSON webhook signed like the daemon's own intake, and email over SMTP. Each is configured in the policy
file and sends one already-rendered message, raising DeliveryError with a reason a person can act on.

Hand-written on the standard library (http.client, smtplib) rather than apprise: no new dependencies, and
every failure keeps its exact cause (HTTP status, SMTP reply code, timeout) for the audit log."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

__all__ = ["Channel", "DeliveryError", "EmailChannel", "Message", "SlackChannel", "WebhookChannel", "send"]

TIMEOUT = 10.0  # seconds for one attempt: a dead channel is given up on quickly and retried later


class DeliveryError(Exception):
    """A message was not delivered; the reason says why (refused, HTTP 500, timeout, SMTP 550 ...)."""


@dataclass(frozen=True)
class Message:
    """One notification, rendered for its channel's kind: a subject (email) and a body."""

    event: str
    subject: str
    body: str
    incident_id: int | None = None
    key: str = ""  # the event's key: the same on every retry, so a receiver can drop a duplicate


def _secret(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    if path is None:
        return value
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from None


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    timeout: float = Field(TIMEOUT, gt=0, le=60, description="Seconds one attempt may take.")

    @field_validator("url_file", "secret_file", "password_file", "ca_file", mode="after", check_fields=False)
    @classmethod
    def _beside_the_policy(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """A relative path is read beside the policy file that names it, whatever directory the daemon or
        the CLI was started from."""
        base = (info.context or {}).get("base")
        if path is None or path.is_absolute() or base is None:
            return path
        return Path(base) / path


class SlackChannel(_Strict):
    """Slack incoming webhook; Mattermost and Discord accept the same payload."""

    type: Literal["slack"]
    url: SecretStr | None = Field(None, description="The webhook URL (a secret: it carries the token).")
    url_file: Path | None = Field(None, description="Or a file holding it.")

    @model_validator(mode="after")
    def _one_url(self) -> SlackChannel:
        url = _secret(self.url, self.url_file, "url")
        if url is None:
            raise ValueError("give url or url_file")
        _http_url(url.get_secret_value())
        object.__setattr__(self, "url", url)
        return self

    @property
    def secrets(self) -> list[str]:
        return [self.url.get_secret_value()] if self.url else []


class WebhookChannel(_Strict):
    """A JSON POST signed like the daemon's intake: X-Runbook-Timestamp and X-Runbook-Signature
    (sha256 HMAC of "<timestamp>.POST.<path>.<body>")."""

    type: Literal["webhook"]
    url: str
    secret: SecretStr | None = None
    secret_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return _http_url(url)

    @model_validator(mode="after")
    def _secret_read(self) -> WebhookChannel:
        object.__setattr__(self, "secret", _secret(self.secret, self.secret_file, "secret"))
        return self

    @property
    def secrets(self) -> list[str]:
        return [self.secret.get_secret_value()] if self.secret else []


class EmailChannel(_Strict):
    """Email over SMTP: STARTTLS (default), implicit TLS or none (a relay on localhost), with AUTH."""

    type: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = Field(None, description="CA bundle to trust for the server's certificate.")
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _password_read(self) -> EmailChannel:
        object.__setattr__(self, "password", _secret(self.password, self.password_file, "password"))
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self

    @property
    def secrets(self) -> list[str]:
        return [self.password.get_secret_value()] if self.password else []


Channel = Annotated[SlackChannel | WebhookChannel | EmailChannel, Field(discriminator="type")]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    import http.client

    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn: Any = kind(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        answer = response.read(2000).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{parts.hostname}: {exc or type(exc).__name__}") from None
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise DeliveryError(f"{parts.hostname} answered HTTP {response.status}: {answer[:200]}")


def _send_slack(channel: SlackChannel, message: Message) -> None:
    assert channel.url is not None
    # allowed_mentions: Discord pings no one whatever the text says; Slack and Mattermost ignore it.
    payload = {"text": message.body, "allowed_mentions": {"parse": []}}
    _post(channel.url.get_secret_value(), json.dumps(payload).encode(), {}, channel.timeout)


def _send_webhook(channel: WebhookChannel, message: Message) -> None:
    body = json.dumps(
        {
            "id": message.key,
            "event": message.event,
            "incident": message.incident_id,
            "subject": message.subject,
            "text": message.body,
        }
    ).encode()
    headers: dict[str, str] = {"X-Runbook-Event": message.key} if message.key else {}
    if channel.secret is not None:
        stamp = str(int(time.time()))
        path = urlsplit(channel.url).path or "/"
        query = urlsplit(channel.url).query
        signed = f"{stamp}.POST.{path}{'?' + query if query else ''}.".encode() + body
        digest = hmac.new(channel.secret.get_secret_value().encode(), signed, hashlib.sha256).hexdigest()
        headers.update({"X-Runbook-Timestamp": stamp, "X-Runbook-Signature": f"sha256={digest}"})
    _post(channel.url, body, headers, channel.timeout)


def _send_email(channel: EmailChannel, message: Message) -> None:
    email = EmailMessage()
    email["Subject"] = message.subject
    email["From"] = channel.sender
    email["To"] = ", ".join(channel.to)
    email.set_content(message.body)  # text/plain only: nothing from an alert is ever rendered as HTML
    context = ssl.create_default_context(cafile=str(channel.ca_file) if channel.ca_file else None)
    try:
        if channel.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout, context=context)
        else:
            smtp = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout)
        with smtp:
            if channel.security == "starttls":
                smtp.starttls(context=context)
            if channel.username and channel.password is not None:
                smtp.login(channel.username, channel.password.get_secret_value())
            smtp.send_message(email)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{channel.host}: SMTP {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(f"{who}: {code}" for who, (code, _) in exc.recipients.items())
        raise DeliveryError(f"{channel.host}: recipients refused ({codes})") from None
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise DeliveryError(f"{channel.host}: {exc or type(exc).__name__}") from None


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else value).strip()[:200]


def send(channel: SlackChannel | WebhookChannel | EmailChannel, message: Message) -> None:
    """Deliver one message; DeliveryError with the reason if it was not."""
    if isinstance(channel, SlackChannel):
        _send_slack(channel, message)
    elif isinstance(channel, WebhookChannel):
        _send_webhook(channel, message)
    else:
        _send_email(channel, message)
