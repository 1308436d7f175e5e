"""Real alert receivers on loopback: an HTTP server standing in for a Slack webhook, and an SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from dagster._core.definitions.sensor_definition import SensorExecutionData

from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.settings import AutomationSettings
from homeprice_assets.resources.landing import LocalLandingZone
from homeprice_assets_tests.helpers import project_instance


@dataclass
class WebhookReceiver:
    url: str
    failing_url: str
    posts: list[dict] = field(default_factory=list)
    picky_url: str = ""  # answers 400 to a message containing "refuse-me", like the others to the rest

    def texts(self) -> list[str]:
        return [p["text"] for p in self.posts]


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """Accepts JSON POSTs on ``/hook`` (200), answers ``/broken`` with HTTP 500, and ``/picky`` with 400 for a
    message containing "refuse-me" (a payload the receiver rejects) and like ``/hook`` otherwise."""
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/broken" or (self.path == "/picky" and b"refuse-me" in body):
                self.send_response(500 if self.path == "/broken" else 400)
                self.end_headers()
                return
            posts.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield WebhookReceiver(
            url=f"{base}/hook", failing_url=f"{base}/broken", posts=posts, picky_url=f"{base}/picky"
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class SmtpReceiver:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    def bodies(self) -> list[str]:
        return [m.get_content() for m in self.messages]  # type: ignore[attr-defined]


class _Collect:
    def __init__(self, sink: SmtpReceiver) -> None:
        self.sink = sink

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.sink.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[attr-defined]
        self.sink.recipients.append(list(envelope.rcpt_tos))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    sink = SmtpReceiver(host="127.0.0.1", port=_free_port())
    controller = Controller(_Collect(sink), hostname=sink.host, port=sink.port, ready_timeout=10)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def notifier(webhook: WebhookReceiver, smtp: SmtpReceiver, tmp_path: Path) -> Notifier:
    """Both channels pointed at the loopback receivers, dedup state in the test's folder."""
    return Notifier(
        slack_webhook_url=webhook.url,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_sender="homeprice@test.local",
        smtp_to=["ops@test.local", "ml@test.local"],
        dagster_base_url="http://dagster.test:3000",
        mlflow_base_url="http://mlflow.test:5000",
        dedup_minutes=30,
        dedup_db=str(tmp_path / "alerts.sqlite"),
        timeout_seconds=5,
    )


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent (SQLite) instance in the test's folder: sensors need real event and run storage."""
    with project_instance(tmp_path / "dagster") as inst:
        yield inst


# ----------------------------------------------------------------------------------------- code location
@dataclass
class Location:
    """The real ingest + monitoring definitions wired to a test's own stores and receivers."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    landing: LocalLandingZone
    home: Path

    def sensor(self, name: str) -> dg.SensorDefinition:
        return self.defs.get_sensor_def(name)

    def tick(self, name: str, cursor: str | None) -> SensorExecutionData:
        context = dg.build_sensor_context(
            instance=self.instance,
            # With a ref (as under the daemon) new partitions requested in the same tick validate.
            instance_ref=self.instance.get_ref(),
            cursor=cursor,
            definitions=self.defs,
            sensor_name=name,
            resources=dict(self.defs.resources or {}),
        )
        return self.sensor(name).evaluate_tick(context)

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Run what a sensor asked for, in-process, as the daemon would launch it."""
        if request.asset_selection:
            job = self.defs.resolve_implicit_global_asset_job_def()
            return job.execute_in_process(
                instance=self.instance,
                asset_selection=list(request.asset_selection),
                tags=request.tags,
                raise_on_error=False,
            )
        job = self.defs.resolve_job_def("ingest_job")
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )


def build_location(
    instance: dg.DagsterInstance,
    home: Path,
    notifier: Notifier,
    automation: AutomationSettings,
    overrides: dict | None = None,
) -> Location:
    """``overrides`` are configuration sections merged over the defaults (the ``settings`` resource)."""
    from homeprice_assets import definitions as top
    from homeprice_assets.ingest.jobs import ingest_job
    from homeprice_assets.monitoring.assets import drift_report
    from homeprice_assets.monitoring.sensors import (
        build_check_alert_sensor,
        build_landing_sensor,
        build_promotion_alert_sensor,
        build_retrain_sensor,
        build_run_failure_sensor,
    )
    from homeprice_assets.resources.config import ProjectConfigResource
    from homeprice_assets.resources.storage import ParquetStorage

    # Every asset of the code location as it stands (the model lifecycle joins once it exists), plus ours.
    assets = [a for a in (top.defs.assets or []) if dg.AssetKey("drift_report") not in getattr(a, "keys", ())]
    landing = LocalLandingZone(root=str(home / "landing"))
    defs = dg.Definitions(
        assets=[*assets, drift_report],
        jobs=[ingest_job],
        sensors=[
            build_landing_sensor(),
            build_retrain_sensor(automation),
            build_run_failure_sensor(),
            build_check_alert_sensor(),
            build_promotion_alert_sensor(),
        ],
        resources={
            **dict(top.defs.resources or {}),
            "io_manager": ParquetStorage(base_dir=str(home / "storage")),
            "landing": landing,
            "notifier": notifier,
            "settings": ProjectConfigResource(overrides=overrides or {}),
        },
    )
    return Location(defs, instance, landing, home)


def apply(location: Location, data: SensorExecutionData) -> None:
    """What the daemon does with a sensor result besides launching runs: register new partitions."""
    for request in data.dynamic_partitions_requests or []:
        location.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
