"""The notifier against real receivers on loopback: contents, links, dedup, fallback and failing channels."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from homeprice_assets.monitoring import messages
from homeprice_assets.monitoring.notify import DedupStore, Notifier
from homeprice_assets.monitoring.settings import AlertSettings, EmailSettings

from .conftest import SmtpReceiver, WebhookReceiver


def test_validation_alert_reaches_slack_and_email(
    notifier: Notifier, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    alert = messages.data_validation_failed(
        notifier.links,
        asset="clean_sales",
        check="quarantine_rate",
        failed_rows=57,
        total_rows=700,
        partition="2014-06",
        description="57 of 700 rows quarantined (8.1%): nonpositive_price: 57",
        run_id="run-123",
    )
    delivery = notifier.send(alert)
    assert delivery.delivered == ["slack", "email"] and not delivery.errors

    [text] = webhook.texts()
    assert "quarantine_rate" in text and "clean_sales[2014-06]" in text
    assert "57 of 700 rows (8.1%)" in text
    assert "http://dagster.test:3000/runs/run-123" in text

    [message] = smtp.messages
    subject = "[homeprice] Data validation failed: quarantine_rate on clean_sales[2014-06]"
    assert message["Subject"].strip() == subject
    assert message["From"] == "homeprice@test.local"
    assert smtp.recipients == [["ops@test.local", "ml@test.local"]]
    body = smtp.bodies()[0]
    assert "57 of 700 rows" in body and "nonpositive_price: 57" in body
    assert "Dagster run: http://dagster.test:3000/runs/run-123" in body


def test_every_alert_kind_carries_its_figures_and_links(notifier: Notifier, webhook: WebhookReceiver) -> None:
    links = notifier.links
    alerts = [
        messages.drift_detected(
            links,
            month="2016-06",
            drifted={"log_living_sf": 0.92, "living_to_lot": 0.31},
            share=0.18,
            threshold=0.15,
            method="Wasserstein distance (normed)",
            target_score=1.19,
            run_id="r-drift",
            mlflow_run_id="m1",
            mlflow_experiment_id="7",
        ),
        messages.promotion_succeeded(
            links,
            model_name="homeprice",
            old_version="3",
            new_version="4",
            metric="mdape",
            old_value=0.082,
            new_value=0.075,
            run_id="r-promo",
            mlflow_run_id="m2",
        ),
        messages.promotion_blocked(
            links,
            model_name="homeprice",
            version="5",
            gates={
                "relative_mdape": {"challenger_mdape": 0.12, "champion_mdape": 0.08, "margin": 0.01},
                "relative_rmse": {"rmse": 270_000.0, "champion_rmse": 250_000.0},
            },
            reason="blocked by relative_mdape; relative_rmse",
            run_id="r-block",
        ),
        messages.month_needs_confirmation(
            links,
            month="2016-08",
            level=450.0,
            reference=300.0,
            change=0.5,
            max_change=0.2,
            run_id="r-level",
        ),
        messages.run_failed(
            links,
            job_name="ingest_job",
            run_id="r-fail",
            error="Failure: no sales files\nmore",
            failed_steps=["raw_sales"],
            partition="2014-07",
        ),
    ]
    for alert in alerts:
        assert notifier.send(alert).delivered == ["slack", "email"]
    drift, promo, blocked, level, failed = webhook.texts()
    assert "log_living_sf=0.92" in drift and "18% of features" in drift and "threshold 15%" in drift
    assert "http://mlflow.test:5000/#/experiments/7/runs/m1" in drift and "/runs/r-drift" in drift
    assert "v3 -> v4" in promo and "mdape 0.082 -> 0.075 (-0.007)" in promo
    assert "http://mlflow.test:5000/#/runs/m2" in promo
    assert (
        "relative_mdape" in blocked
        and "challenger_mdape=0.12" in blocked
        and "champion_mdape=0.08" in blocked
    )
    assert "blocked by relative_mdape, relative_rmse" in blocked and "rmse=2.7e+05" in blocked
    assert "accept-month 2016-08" in level and "+50.0%" in level and "$450/sq ft" in level
    assert "/runs/r-level" in level
    assert "ingest_job" in failed and "raw_sales" in failed and "no sales files" in failed
    assert "more" not in failed.split("Error: ")[1]  # first line of the error only
    assert "partition 2014-07" in failed and "/runs/r-fail" in failed


def test_same_alert_not_repeated_within_window_even_from_another_notifier(
    notifier: Notifier, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    alert = messages.run_failed(notifier.links, job_name="ingest_job", run_id="r1")
    assert notifier.send(alert).delivered
    # A second process (a fresh resource on the same dedup file) must agree it was already sent.
    again = Notifier(**{**notifier.model_dump(), "smtp_to": list(notifier.smtp_to)}).send(alert)
    assert again.duplicate and not again.delivered
    other = messages.run_failed(notifier.links, job_name="ingest_job", run_id="r2")
    assert notifier.send(other).delivered
    assert len(webhook.posts) == 2 and len(smtp.messages) == 2


def test_dedup_window_expires(tmp_path: Path) -> None:
    store = DedupStore(tmp_path / "d.sqlite")
    store.mark_sent("k", now=1000.0)
    assert store.recently_sent("k", window_seconds=600, now=1500.0)
    assert not store.recently_sent("k", window_seconds=600, now=1700.0)
    assert not store.recently_sent("other", window_seconds=600, now=1500.0)


def test_no_channel_logs_the_alert_and_does_not_fail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = Notifier(dedup_db=str(tmp_path / "a.sqlite"))
    alert = messages.data_validation_failed(
        quiet.links, asset="raw_sales", check="required_columns", failed_rows=None, run_id="r9"
    )
    with caplog.at_level(logging.WARNING, logger="homeprice.alerts"):
        delivery = quiet.send(alert)
    assert delivery.logged_only and not delivery.delivered and not delivery.errors
    assert "ALERT [homeprice] Data validation failed: required_columns on raw_sales" in caplog.text
    assert "http://127.0.0.1:3000/runs/r9" in caplog.text


def test_failing_channel_is_logged_not_raised(
    notifier: Notifier, webhook: WebhookReceiver, smtp: SmtpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Notifier(
        **{
            **notifier.model_dump(),
            "slack_webhook_url": webhook.failing_url,
            "smtp_port": 1,
            "smtp_to": list(notifier.smtp_to),
        }
    )
    alert = messages.run_failed(broken.links, job_name="ingest_job", run_id="r-broken")
    with caplog.at_level(logging.ERROR, logger="homeprice.alerts"):
        delivery = broken.send(alert)
    assert set(delivery.errors) == {"slack", "email"} and not delivery.delivered
    assert "slack channel failed" in caplog.text and "email channel failed" in caplog.text
    # Nothing was delivered, so the alert is not marked sent: the next attempt goes out.
    assert notifier.send(alert).delivered == ["slack", "email"]
    assert len(webhook.posts) == 1 and len(smtp.messages) == 1


def test_from_settings_reads_secrets_from_environment(
    monkeypatch: pytest.MonkeyPatch, webhook: WebhookReceiver
) -> None:
    monkeypatch.setenv("HOMEPRICE_SLACK_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("HOMEPRICE_SMTP_TO", "a@x.test, b@x.test")
    settings = AlertSettings(
        dagster_base_url="http://ui.test", email=EmailSettings(host="127.0.0.1", port=2525)
    )
    n = Notifier.from_settings(settings)
    assert n.smtp_to == ["a@x.test", "b@x.test"] and n.smtp_port == 2525 and n.smtp_host == "127.0.0.1"
    assert n.dagster_base_url == "http://ui.test"
    monkeypatch.delenv("HOMEPRICE_SLACK_WEBHOOK_URL")
    assert Notifier.from_settings(AlertSettings()).channels() == []


def test_an_alert_a_channel_failed_to_take_is_delivered_when_it_is_back(
    notifier: Notifier, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    """Slack answers 500 while e-mail works: e-mail gets the alert at once, Slack on a retry once it is back
    (after a back-off), exactly once; a channel still down after a day is given up, with an error."""
    down = Notifier(**{**notifier.model_dump(), "slack_webhook_url": webhook.failing_url})
    alert = messages.run_failed(down.links, job_name="ingest_job", run_id="r-later")
    delivery = down.send(alert)
    assert set(delivery.errors) == {"slack"} and delivery.delivered == ["email"]
    assert not webhook.posts and len(smtp.messages) == 1
    t0 = time.time()
    assert down.retry_pending(now=t0 + 61) == 0  # still down: the next try is two minutes later
    assert notifier.retry_pending(now=t0 + 62) == 0  # back up, but not due yet
    assert notifier.retry_pending(now=t0 + 61 + 121) == 1
    assert webhook.texts() == [alert.text()] and len(smtp.messages) == 1  # e-mail is not sent twice
    assert notifier.retry_pending(now=t0 + 10_000) == 0  # paid: nothing owed any more

    never = messages.run_failed(down.links, job_name="ingest_job", run_id="r-never")
    down.send(never)
    store = DedupStore(Path(str(notifier.dedup_db)))
    assert down.retry_pending(now=t0 + 24 * 3600 + 60) == 0  # a day of failures: given up
    assert store.due(now=t0 + 10 * 24 * 3600) == []
    switched_off = messages.run_failed(down.links, job_name="ingest_job", run_id="r-switched-off")
    down.send(switched_off)
    assert [row[0] for row in store.due(now=t0 + 10 * 24 * 3600)] == [switched_off.key]
    no_slack = Notifier(**{**notifier.model_dump(), "slack_webhook_url": None})
    assert no_slack.retry_pending(now=t0 + 24 * 3600 + 60) == 0  # a channel switched off: expires too
    assert DedupStore(Path(str(notifier.dedup_db))).due(now=t0 + 10 * 24 * 3600) == []
    assert len(webhook.posts) == 1


def test_an_alert_the_channel_refuses_does_not_hold_back_the_others(
    notifier: Notifier, webhook: WebhookReceiver
) -> None:
    """A channel that is down (HTTP 500) postpones all its owed alerts untried; one that refuses one alert
    (HTTP 400) is up: the alerts owed after it still go out in the same pass."""
    down = Notifier(**{**notifier.model_dump(), "slack_webhook_url": webhook.failing_url, "smtp_host": None})
    refused = messages.run_failed(down.links, job_name="ingest_job", run_id="refuse-me")
    fine = messages.run_failed(down.links, job_name="ingest_job", run_id="r-fine")
    down.send(refused)
    down.send(fine)
    t0 = time.time()
    picky = Notifier(**{**down.model_dump(), "slack_webhook_url": webhook.picky_url})
    assert picky.retry_pending(now=t0 + 61) == 1
    assert webhook.texts() == [fine.text()]
    owed = DedupStore(Path(str(notifier.dedup_db))).due(now=t0 + 10 * 24 * 3600)
    assert [row[0] for row in owed] == [refused.key]
