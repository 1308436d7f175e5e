"""Alert transports: a Slack incoming webhook and SMTP e-mail, deduplicated across processes.

The messages themselves (what people are told) are built in ``messages``; this module only delivers them.

Alerting must never be the thing that breaks a pipeline: with no channel configured an alert is only logged,
and a channel that errors is logged and skipped. The dedup state lives in a small SQLite file under the
project home because sensors, run workers and the CLI are separate processes that must agree on what was sent.

``dagster-slack``'s ``SlackResource`` needs a bot token and the Slack SDK; an incoming webhook is one HTTP
POST, so the Slack channel is a plain ``urllib`` call and works with any webhook-compatible receiver.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import sqlite3
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from homeprice_assets.config import homeprice_home
from homeprice_assets.monitoring.messages import Alert, AlertLinks
from homeprice_assets.monitoring.settings import AlertSettings, alert_settings

logger = logging.getLogger("homeprice.alerts")

SLACK_WEBHOOK_ENV = "HOMEPRICE_SLACK_WEBHOOK_URL"
SMTP_HOST_ENV = "HOMEPRICE_SMTP_HOST"
SMTP_PORT_ENV = "HOMEPRICE_SMTP_PORT"
SMTP_USER_ENV = "HOMEPRICE_SMTP_USER"
SMTP_PASSWORD_ENV = "HOMEPRICE_SMTP_PASSWORD"
SMTP_TO_ENV = "HOMEPRICE_SMTP_TO"  # comma-separated; overrides alerts.email.to
SMTP_FROM_ENV = "HOMEPRICE_SMTP_FROM"


# A channel that failed is retried after 1, 2, 4 ... minutes (at most an hour apart), for a day.
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
RETRY_FOR_SECONDS = 24 * 3600.0


def _channel_down(exc: Exception) -> bool:
    """Is the channel itself unreachable (not just refusing this one alert)?"""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, smtplib.SMTPResponseException):  # the server answered, about this message
        return False
    return isinstance(exc, OSError)  # connection refused or reset, timeouts, DNS, a dropped SMTP session


# --------------------------------------------------------------------------------------------- dedup
class DedupStore:
    """Remembers when each alert key was last sent, and which channels still owe an alert, in SQLite, so
    separate processes agree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS sent_alerts (key TEXT PRIMARY KEY, sent_at REAL NOT NULL)"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS pending_alerts (key TEXT NOT NULL, channel TEXT NOT NULL, "
                "alert TEXT NOT NULL, first_failed_at REAL NOT NULL, attempts INTEGER NOT NULL, "
                "next_at REAL NOT NULL, error TEXT, PRIMARY KEY (key, channel))"
            )

    def owe(self, alert: Alert, channel: str, error: str, now: float | None = None) -> None:
        """``channel`` failed to deliver ``alert``: keep it for a later retry (the first failure only)."""
        now = time.time() if now is None else now
        payload = json.dumps(asdict(alert), default=str)
        with closing(self._connect()) as con:
            con.execute(
                "INSERT INTO pending_alerts VALUES (?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT(key, channel) DO NOTHING",
                (alert.key, channel, payload, now, now + RETRY_FIRST_SECONDS, error),
            )

    def due(self, now: float | None = None) -> list[tuple[str, str, Alert, float, int]]:
        """(key, channel, alert, first failed at, attempts) of every retry that is due."""
        now = time.time() if now is None else now
        with closing(self._connect()) as con:
            rows = con.execute(
                "SELECT key, channel, alert, first_failed_at, attempts FROM pending_alerts "
                "WHERE next_at <= ? ORDER BY first_failed_at",
                (now,),
            ).fetchall()
        out = []
        for key, channel, payload, first, attempts in rows:
            fields = json.loads(payload)
            fields["lines"] = tuple(fields.get("lines") or ())
            out.append((key, channel, Alert(**fields), first, attempts))
        return out

    def settle(self, key: str, channel: str) -> None:
        """Delivered at last, or given up on."""
        with closing(self._connect()) as con:
            con.execute("DELETE FROM pending_alerts WHERE key = ? AND channel = ?", (key, channel))

    def postpone(self, key: str, channel: str, attempts: int, error: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        wait = min(RETRY_FIRST_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS)
        with closing(self._connect()) as con:
            con.execute(
                "UPDATE pending_alerts SET attempts = ?, next_at = ?, error = ? "
                "WHERE key = ? AND channel = ?",
                (attempts, now + wait, error, key, channel),
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def recently_sent(self, key: str, window_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with closing(self._connect()) as con:
            row = con.execute("SELECT sent_at FROM sent_alerts WHERE key = ?", (key,)).fetchone()
        return row is not None and now - row[0] < window_seconds

    def mark_sent(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with closing(self._connect()) as con:
            con.execute(
                "INSERT INTO sent_alerts (key, sent_at) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET sent_at = excluded.sent_at",
                (key, now),
            )


# --------------------------------------------------------------------------------------------- resource
@dataclass
class Delivery:
    """What happened to one alert: who got it, what failed, whether it was a suppressed repeat."""

    alert: Alert
    delivered: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    duplicate: bool = False
    logged_only: bool = False


class Notifier(dg.ConfigurableResource):
    """Sends alerts to Slack (incoming webhook) and/or e-mail (SMTP); otherwise to the log.

    Secrets are meant to come in as ``dg.EnvVar`` (see ``Notifier.from_settings``); every field is optional.
    """

    slack_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "homeprice@localhost"
    smtp_to: list[str] = Field(default_factory=list)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    dagster_base_url: str = "http://127.0.0.1:3000"
    mlflow_base_url: str | None = None
    dedup_minutes: float = 60.0
    dedup_db: str | None = None  # default: $HOMEPRICE_HOME/alerts/sent.sqlite
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: AlertSettings | None = None) -> Notifier:
        """A notifier from the ``alerts`` config section; secrets as ``EnvVar`` only when they are set.

        An ``EnvVar`` for an unset variable would fail every run, so unset channels simply stay off.
        """
        s = settings or alert_settings()
        env = os.environ
        to = s.email.to
        if env.get(SMTP_TO_ENV):
            to = [a.strip() for a in env[SMTP_TO_ENV].split(",") if a.strip()]
        kwargs: dict[str, Any] = {
            "smtp_port": int(env.get(SMTP_PORT_ENV) or s.email.port),
            "smtp_sender": env.get(SMTP_FROM_ENV) or s.email.sender,
            "smtp_to": to,
            "smtp_user": env.get(SMTP_USER_ENV) or s.email.user,
            "smtp_starttls": s.email.starttls,
            "dagster_base_url": s.dagster_base_url,
            "mlflow_base_url": s.mlflow_base_url,
            "dedup_minutes": s.dedup_minutes,
            "timeout_seconds": s.timeout_seconds,
        }
        if env.get(SLACK_WEBHOOK_ENV):
            kwargs["slack_webhook_url"] = dg.EnvVar(SLACK_WEBHOOK_ENV)
        if env.get(SMTP_HOST_ENV):
            kwargs["smtp_host"] = dg.EnvVar(SMTP_HOST_ENV)
        elif s.email.host:
            kwargs["smtp_host"] = s.email.host
        if env.get(SMTP_PASSWORD_ENV):
            kwargs["smtp_password"] = dg.EnvVar(SMTP_PASSWORD_ENV)
        return cls(**kwargs)

    # -- helpers
    @property
    def links(self) -> AlertLinks:
        return AlertLinks(self.dagster_base_url, self.mlflow_base_url)

    def channels(self) -> list[str]:
        out = []
        if self.slack_webhook_url:
            out.append("slack")
        if self.smtp_host and self.smtp_to:
            out.append("email")
        return out

    def _dedup(self) -> DedupStore:
        path = Path(self.dedup_db) if self.dedup_db else homeprice_home() / "alerts" / "sent.sqlite"
        return DedupStore(path)

    # -- sending
    def send(self, alert: Alert, log: Any = None) -> Delivery:
        """Deliver ``alert`` unless the same key went out within the dedup window. Never raises."""
        log = log or logger
        delivery = Delivery(alert)
        try:
            store = self._dedup()
            if store.recently_sent(alert.key, self.dedup_minutes * 60):
                delivery.duplicate = True
                log.info(f"alert {alert.key} suppressed: already sent within {self.dedup_minutes:g} min")
                return delivery
        except Exception as exc:  # a broken dedup store must not silence alerts
            store = None
            log.warning(f"alert dedup store unavailable ({exc!r}); sending without dedup")

        channels = self.channels()
        if not channels:
            delivery.logged_only = True
            (log.error if alert.severity == "error" else log.warning)("ALERT " + alert.text())
        for channel in channels:
            try:
                self._deliver(channel, alert)
                delivery.delivered.append(channel)
            except Exception as exc:
                delivery.errors[channel] = repr(exc)
                log.error(
                    f"alert {alert.key}: {channel} channel failed (retried later): {exc!r}\n" + alert.text()
                )
                # owed, not lost: ``retry_pending`` delivers it when the channel is back
                if store is not None:
                    try:
                        store.owe(alert, channel, repr(exc))
                    except Exception as store_exc:
                        log.warning(f"alert {alert.key} not kept for a retry ({store_exc!r})")
                continue
            if store is not None:  # a retry this channel still owed for the same alert is paid
                try:
                    store.settle(alert.key, channel)
                except Exception as store_exc:
                    log.warning(f"alert {alert.key}: owed {channel} retry not cleared ({store_exc!r})")
        if store is not None and (delivery.delivered or delivery.logged_only):
            try:
                store.mark_sent(alert.key)
            except Exception as exc:
                log.warning(f"alert dedup store not updated ({exc!r})")
        return delivery

    def retry_pending(self, log: Any = None, now: float | None = None) -> int:
        """Deliver the alerts a channel failed to take earlier, when their retry is due; returns how many
        went out. Given up after a day, with an error in the log. Never raises."""
        log = log or logger
        now = time.time() if now is None else now
        try:
            store = self._dedup()
            due = store.due(now)
        except Exception as exc:
            log.warning(f"pending alerts unavailable ({exc!r})")
            return 0
        sent = 0
        configured = set(self.channels())
        down: dict[str, str] = {}  # channels that failed in this pass: the rest of theirs wait, untried
        for key, channel, alert, first, attempts in due:
            error = down.get(channel) or ("channel switched off" if channel not in configured else None)
            if error is None:
                try:
                    self._deliver(channel, alert)
                except Exception as exc:
                    error = repr(exc)
                    if _channel_down(exc):  # the rest of its alerts wait; one alert refused does not
                        down[channel] = error
            try:
                if error is None:
                    store.settle(key, channel)
                    store.mark_sent(key, now)
                    sent += 1
                    log.info(f"alert {key}: delivered to {channel} on attempt {attempts + 1}")
                elif now - first >= RETRY_FOR_SECONDS:
                    store.settle(key, channel)
                    log.error(f"alert {key}: {channel} gave up after {attempts + 1} attempts: {error}")
                else:
                    store.postpone(key, channel, attempts + 1, error, now)
            except Exception as exc:
                log.warning(f"alert {key}: pending record not updated ({exc!r})")
        return sent

    def _deliver(self, channel: str, alert: Alert) -> None:
        self._send_slack(alert) if channel == "slack" else self._send_email(alert)

    def _send_slack(self, alert: Alert) -> None:
        payload = {"text": alert.text(), "username": "homeprice"}
        request = urllib.request.Request(
            str(self.slack_webhook_url),
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            if response.status >= 300:
                raise RuntimeError(f"Slack webhook answered HTTP {response.status}")

    def _send_email(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = f"[homeprice] {alert.title}"
        message["From"] = self.smtp_sender
        message["To"] = ", ".join(self.smtp_to)
        message["X-Homeprice-Alert"] = alert.kind
        message.set_content(alert.text())
        with smtplib.SMTP(str(self.smtp_host), self.smtp_port, timeout=self.timeout_seconds) as smtp:
            if self.smtp_starttls:
                smtp.starttls()
            if self.smtp_user and self.smtp_password:
                smtp.login(self.smtp_user, self.smtp_password)
            smtp.send_message(message)
