"""homeprice under the real daemon: `homeprice run`, then `dagster dev` and `bentoml serve` as subprocesses.

Shared by the slow test (test_daemon.py) and the benchmark (bench/daemon_bench.py). Everything lives under
one temporary root (project home, Dagster storage, MLflow store, BentoML home) and talks on 127.0.0.1 only;
alerts go to a webhook receiver in this process. Servers are started in their own process groups and
stopped with SIGTERM to the group.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pandas as pd
import yaml

from homeprice_assets.config import BUNDLED_DATA, REPO_ROOT, load_config
from homeprice_assets_tests.helpers import stop_process_group

T = TypeVar("T")
LOCATION = "homeprice"  # workspace.yaml
SENSORS = ("landing_sensor", "retrain_sensor", "check_alert_sensor", "promotion_alert_sensor")

# Small training (a minute on two cores), short sensor intervals, and gates that let a sound model through:
# the blocked path is tested in-process (test_promotion_alerts.py, test_promotion.py).
CONFIG: dict[str, Any] = {
    "training": {
        "window_months": 12,
        "validation_months": 2,
        "calibration_months": 2,
        "early_stopping_months": 1,
        "explain_sample": 100,
        "params": {"num_boost_round": 300, "learning_rate": 0.1, "early_stopping_rounds": 30},
    },
    "promotion": {
        "max_mdape": 0.5,
        "min_ppe10": 0.0,
        "max_mdape_increase": 1.0,
        "max_ppe10_decrease": 1.0,
        "max_coverage_decrease": 1.0,
        "max_rmse_increase": 1.0,
        "max_churn": None,
    },
    "monitoring": {
        "drift": {"reference_months": 6},
        "automation": {
            "retrain_policy": "both",
            "landing_sensor_interval_seconds": 5,
            "retrain_sensor_interval_seconds": 5,
            "check_alert_sensor_interval_seconds": 5,
        },
    },
    "alerts": {"dedup_minutes": 600},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """``probe()`` until it returns something truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# ----------------------------------------------------------------------------------------- webhook
@dataclass
class Webhook:
    url: str
    posts: list[tuple[float, str]] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [t for _, t in self.posts]

    def titles(self) -> list[str]:
        return [t.splitlines()[0] for t in self.texts()]


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    """A Slack-compatible incoming webhook on loopback, recording (time, text) of every POST."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.posts.append((time.time(), json.loads(body)["text"]))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    dagster_port: int = 0
    serve_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def storage(self) -> Path:
        return Path(self.env["HOMEPRICE_DAGSTER_STORAGE"])

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def homeprice(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """The ``homeprice`` command, as a user runs it (its own process, this stack's environment)."""
        with self.log("homeprice").open("a") as out:
            out.write(f"\n$ homeprice {' '.join(args)}\n")
            out.flush()
            done = subprocess.run(
                [sys.executable, "-m", "homeprice_assets.cli", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise AssertionError(
                f"homeprice {' '.join(args)} exited {done.returncode}:\n{self.tail('homeprice')}"
            )
        return done

    def tail(self, name: str, chars: int = 4000) -> str:
        path = self.log(name)
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def _start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=self.log(name).open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_dagster(self, wait: bool = True) -> subprocess.Popen:
        """`dagster dev` (webserver + daemon) through `homeprice dev`, on a free port."""
        self.dagster_port = free_port()
        proc = self._start(
            "dagster-dev",
            [sys.executable, "-m", "homeprice_assets.cli", "dev", "--port", str(self.dagster_port)],
        )
        if wait:
            self.wait_dagster(proc)
        return proc

    def wait_dagster(self, proc: subprocess.Popen) -> None:
        wait_for("the Dagster webserver", lambda: self._alive(proc) and self.sensor_ticks(), 300, every=1)

    def start_bento(self, wait: bool = True) -> subprocess.Popen:
        self.serve_port = free_port()
        cmd = [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "bento.service:HomePrice",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.serve_port),
        ]
        proc = self._start("bentoml", cmd)
        if wait:
            self.wait_bento(proc)
        return proc

    def wait_bento(self, proc: subprocess.Popen) -> None:
        wait_for("bentoml serve to be ready", lambda: self._alive(proc) and self._ready(), 300, every=0.5)

    def _alive(self, proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            name = "dagster-dev" if proc.args and "dev" in proc.args else "bentoml"
            raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{self.tail(name)}")
        return True

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process_group(proc, timeout=60)
        self.procs.clear()

    # -- Dagster
    def instance(self) -> dg.DagsterInstance:
        """The daemon's instance, opened read-mostly from this process (SQLite under the root)."""
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.storage)))

    def graphql(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dagster_port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())

    def sensor_ticks(self) -> dict[str, list[dict[str, Any]]] | None:
        """Sensor name -> its recent ticks (newest first), from the webserver."""
        selector = f'{{repositoryLocationName: "{LOCATION}", repositoryName: "__repository__"}}'
        data = self.graphql(
            f"{{ sensorsOrError(repositorySelector: {selector}) {{ ... on Sensors {{ results {{ name "
            "sensorState { status ticks(limit: 20) { status timestamp skipReason runIds } } } } } }"
        )
        results = (data.get("data") or {}).get("sensorsOrError", {}).get("results")
        if not results:
            return None
        return {s["name"]: s["sensorState"]["ticks"] for s in results}

    # -- serving
    def _post(self, path: str, payload: object) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.serve_port}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.serve_port}/readyz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def served_version(self, home: dict[str, Any]) -> str:
        """The model version that prices ``home`` now."""
        return str(self._post("/predict", {"home": home})["model_version"])


def build_stack(root: Path, webhook_url: str, config: dict[str, Any] | None = None) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "homeprice.yaml"
    config_path.write_text(yaml.safe_dump(config or CONFIG, sort_keys=False))
    env = {
        **os.environ,
        "HOMEPRICE_HOME": str(root / "home"),
        "HOMEPRICE_CONFIG": str(config_path),
        # The repository's instance config (run queue, lifecycle tag limit) over storage under the root.
        "DAGSTER_HOME": str(REPO_ROOT),
        "HOMEPRICE_DAGSTER_STORAGE": str(root / "dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / "bentoml"),
        "HOMEPRICE_SLACK_WEBHOOK_URL": webhook_url,
        "HOMEPRICE_PREDICTION_LOG_URL": f"sqlite:///{root / 'predictions.db'}",
        "HOMEPRICE_SERVING_POLL_SECONDS": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "MPLBACKEND": "Agg",
    }
    for key in ("HOMEPRICE_LANDING_URL", "HOMEPRICE_STORAGE_URL", "HOMEPRICE_SMTP_HOST", "HOMEPRICE_PROFILE"):
        env.pop(key, None)
    (root / "dagster").mkdir(exist_ok=True)
    return Stack(root, env)


def sample_home(month: str) -> dict[str, Any]:
    """One bundled sale of ``month`` as a /predict request body."""
    from homeprice_assets.features.engineering import INPUT_FIELDS, feature_table
    from homeprice_assets.ingest.rules import clean_sales

    sales = pd.read_csv(BUNDLED_DATA, dtype=str, keep_default_na=False)
    part = sales[sales["sale_date"].str[:7] == month]
    row = feature_table(clean_sales(part, load_config().data, month=month).clean).iloc[0]
    home = {
        f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in INPUT_FIELDS if f != "sale_date"
    }
    home = {k: v for k, v in home.items() if pd.notna(v)}
    home["location"] = str(home["location"])
    home["waterfront"] = int(home.get("waterfront", 0))
    home["sale_date"] = str(pd.Timestamp(row["sale_date"]).date())
    return home


# ----------------------------------------------------------------------------------------- timeline
@dataclass(frozen=True)
class RunRow:
    run_id: str
    job: str
    what: str  # ingest YYYY-MM | drift_report | lifecycle | ...
    trigger: str
    status: str
    created: float
    started: float | None
    ended: float | None


def runs_since(instance: dg.DagsterInstance, since: float) -> list[RunRow]:
    """Every run created at or after ``since`` (epoch seconds), oldest first."""
    rows = []
    for record in instance.get_run_records():
        created = record.create_timestamp
        created_at = (created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp()
        if created_at < since:
            continue
        run = record.dagster_run
        selection = sorted(k.to_user_string() for k in (run.asset_selection or []))
        if run.job_name == "ingest_job":
            what = f"ingest {run.tags.get('dagster/partition')}"
        elif selection == ["drift_report"]:
            what = "drift_report"
        elif "price_model" in selection or run.job_name == "model_lifecycle_job":
            what = "lifecycle (train, validate, promote, explain, card)"
        else:
            what = ", ".join(selection) or run.job_name
        rows.append(
            RunRow(
                run.run_id,
                run.job_name,
                what,
                run.tags.get("homeprice/trigger", run.tags.get("dagster/sensor_name", "")),
                run.status.value,
                created_at,
                record.start_time,
                record.end_time,
            )
        )
    return sorted(rows, key=lambda r: r.created)


def format_timeline(t0: float, runs: list[RunRow], events: list[tuple[float, str]]) -> str:
    """One line per run (queued/started/ended, seconds after ``t0``) and per event, in time order."""
    lines: list[tuple[float, str]] = list(events)
    for r in runs:
        start = f"{r.started - t0:6.1f}" if r.started else "     -"
        end = f"{r.ended - t0:6.1f}" if r.ended else "     -"
        lines.append(
            (
                r.created,
                f"run {r.what} [{r.trigger or '-'}] queued, started {start} s, ended {end} s: {r.status}",
            )
        )
    return "\n".join(f"  +{ts - t0:6.1f} s  {text}" for ts, text in sorted(lines))


# ----------------------------------------------------------------------------------------- the scenario
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass
class Outcome:
    """What happened, with epoch times: ``t_dev`` daemon up, ``t_land`` the new month landed."""

    t_start: float
    t_dev: float
    t_land: float
    runs: list[RunRow]  # every run the daemon created (after `dagster dev` started)
    events: list[tuple[float, str]]
    first_version: str
    served_version: str
    serving_at: float | None  # when the service first answered with a new version
    alerts: list[tuple[float, str]]
    ticks: dict[str, list[dict[str, Any]]]  # every sensor's ticks before the month landed

    def runs_before_landing(self) -> list[RunRow]:
        return [r for r in self.runs if r.created < self.t_land]

    def runs_after_landing(self) -> list[RunRow]:
        return [r for r in self.runs if r.created >= self.t_land]

    def timeline(self) -> str:
        return format_timeline(
            self.t_land,
            self.runs,
            [*self.events, *((t, f"alert: {x.splitlines()[0]}") for t, x in self.alerts)],
        )


def run_scenario(
    root: Path,
    hook: Webhook,
    since: str = "2015-07",
    until: str = "2016-06",
    month: str = "2016-07",
    config: dict[str, Any] | None = None,
    timeout: float = 1200,
    settle_seconds: float = 12,  # quiet for two sensor intervals (5 s) and more: no late run, no repeat alert
) -> Outcome:
    """`homeprice run` on [since, until], serve it, start the daemon, land ``month``, and watch."""
    stack = build_stack(root, hook.url, config)
    events: list[tuple[float, str]] = []
    t_start = time.time()
    home = sample_home(until)
    try:
        stack.homeprice("run", "--since", since, "--until", until)
        events.append((time.time(), f"`homeprice run` {since}..{until} done"))
        # Both servers start at once (each takes tens of seconds to import and load): the daemon's first
        # ticks must request nothing whether or not the service is up yet.
        t_dev = time.time()
        bento = stack.start_bento(wait=False)
        dagster = stack.start_dagster(wait=False)
        stack.wait_bento(bento)
        first = stack.served_version(home)
        events.append((time.time(), f"bentoml serve ready, serving v{first}"))
        stack.wait_dagster(dagster)
        events.append((time.time(), "dagster dev up (webserver + daemon)"))

        def ticked_twice() -> dict[str, list[dict[str, Any]]] | None:
            ticks = stack.sensor_ticks() or {}
            done = [s for s in SENSORS if len([t for t in ticks.get(s, []) if t["status"] != "STARTED"]) >= 2]
            return ticks if len(done) == len(SENSORS) else None

        ticks_at_landing = wait_for("every sensor to tick twice", ticked_twice, 300, every=2)
        events.append((time.time(), f"sensors {', '.join(SENSORS)} each ticked twice"))
        instance = stack.instance()

        t_land = time.time()
        stack.homeprice("land", "--since", month, "--until", month)
        events.append((time.time(), f"landed {month} (`homeprice land`)"))

        serving_at, served = None, first
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if serving_at is None:
                try:
                    served = stack.served_version(home)
                except OSError:
                    served = first
                if served != first:
                    serving_at = time.time()
                    events.append((serving_at, f"the service answers with v{served}"))
            runs = runs_since(instance, t_dev)
            after = [r for r in runs if r.created >= t_land]
            lifecycle_done = any(r.what.startswith("lifecycle") and r.status not in ACTIVE for r in after)
            busy = any(r.status in ACTIVE for r in runs)
            announced = serving_at is not None and any(
                f"Promoted homeprice v{served} to champion" in title for title in hook.titles()
            )
            if lifecycle_done and not busy and (announced or _blocked(hook)):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle_seconds:
                    break
            else:
                quiet_since = None
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"no promotion (or block) within {timeout:.0f} s; runs:\n"
                + format_timeline(t_land, runs_since(instance, t_dev), events)
                + f"\n--- dagster dev log ---\n{stack.tail('dagster-dev')}"
            )
        return Outcome(
            t_start=t_start,
            t_dev=t_dev,
            t_land=t_land,
            runs=runs_since(instance, t_dev),
            events=events,
            first_version=first,
            served_version=served,
            serving_at=serving_at,
            alerts=list(hook.posts),
            ticks=ticks_at_landing,
        )
    finally:
        stack.stop()


def _blocked(hook: Webhook) -> bool:
    return any("blocked by" in t.splitlines()[0] for t in hook.texts())
