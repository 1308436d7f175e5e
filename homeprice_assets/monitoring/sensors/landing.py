"""Landing -> ingest: a new or changed file in the landing zone starts the ingest run of its sale month."""

from __future__ import annotations

import json

import dagster as dg

from homeprice_assets.ingest.jobs import ingest_job
from homeprice_assets.ingest.status import already_ingested
from homeprice_assets.monitoring.sensors.common import MONTH_TAG, TRIGGER_TAG, load_cursor
from homeprice_assets.partitions import sale_month_partitions
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG, LandingZone, month_digest


def build_landing_sensor(
    interval_seconds: int = 60, name: str = "landing_sensor", in_process: bool = True
) -> dg.SensorDefinition:
    """One run per month with new or changed files (run key: the month and its files' digest).

    ``in_process`` is kept for callers; ingest runs are always in-process (``ingest_job``'s executor).
    """

    @dg.sensor(
        name=name,
        target=ingest_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A new or changed file in the landing zone starts the ingest run of its sale month.",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, settings: ProjectConfigResource
    ) -> dg.SensorResult:
        """Cursor: {file key: fingerprint} of every file already handled.

        A month whose exact files (same digest) were already ingested, by this sensor or in-process by
        ``homeprice run`` / ``homeprice ingest``, is not requested again: a first start after ``homeprice
        run`` (empty cursor) requests nothing, and a new file requests exactly its month.
        """
        state = load_cursor(context.cursor)
        seen: dict[str, str] = state.get("files", {})
        scan = landing.scan(settings.get().data)
        files = scan.files
        # Nothing on the landing zone is ignored silently: each file that belongs to no month is logged once
        # (raw_sales' metadata and `homeprice ingest` count them too).
        told: dict[str, str] = state.get("set_aside", {})
        for aside in scan.set_aside:
            if told.get(aside.key) != aside.reason:
                context.log.warning(f"landing: {aside.key} set aside: {aside.reason}")
        told = {a.key: a.reason for a in scan.set_aside}
        changed = [f for f in files if seen.get(f.key) != f.fingerprint]
        months = sorted({f.month for f in changed})
        known = set(context.instance.get_dynamic_partitions(sale_month_partitions.name))
        new_months = [m for m in months if m not in known]
        requests, done = [], []
        for month in months:
            # The run key names the month's exact content: the same files never run twice, a change does.
            digest = month_digest(files, month)
            if already_ingested(context.instance, month, digest, include_failed=True):
                done.append(month)
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"ingest:{month}:{digest}",
                    partition_key=month,
                    tags={TRIGGER_TAG: "landing", MONTH_TAG: month, LANDED_DIGEST_TAG: digest},
                )
            )
        if requests:
            context.log.info(
                f"landing: {len(changed)} new/changed file(s) -> months {[r.partition_key for r in requests]}"
            )
        if done:
            context.log.info(f"landing: {len(done)} month(s) already ingested with these exact files")
        seen.update({f.key: f.fingerprint for f in changed})
        skip = None
        if not requests:
            skip = dg.SkipReason(
                f"no new files in {landing.describe()}"
                if not done
                else f"{len(done)} month(s) with new files were already ingested with these exact files"
            )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[sale_month_partitions.build_add_request(new_months)]
            if new_months
            else [],
            cursor=json.dumps({"files": seen, "set_aside": told}, sort_keys=True),
            skip_reason=skip,
        )

    return landing_sensor
