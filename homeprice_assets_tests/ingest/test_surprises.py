"""Issue 14, one test per row of its table: other people's exports and careless files on the landing zone.

The bundled data is landed for 2012-02 and 2012-03, 2012-02 is ingested, then one thing changes in
2012-03 (or a new file lands). Each test asserts that every good row reaches ``clean_sales`` (or that the file
is set aside with its reason) and that 2012-02 is untouched.
"""

from __future__ import annotations

import re

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LocalLandingZone, month_digest
from homeprice_assets_tests.helpers import check_results, ingest_month

MONTH, OTHER = "2012-03", "2012-02"


@pytest.fixture
def landed(instance, landing: LocalLandingZone, storage, bundled_sales: pd.DataFrame) -> dict:
    """2012-02 and 2012-03 landed (2012-02 ingested); what the other month looked like before."""
    land_history(landing, load_config().data, since=OTHER, until=MONTH)
    assert _ingest_raw_and_clean(OTHER, instance, landing, storage).success
    return {
        "digest": month_digest(landing.list_files(), OTHER),
        "materializations": _count_materializations(instance, OTHER),
        "rows": _rows(bundled_sales, OTHER),
    }


def _rows(sales: pd.DataFrame, month: str) -> pd.DataFrame:
    return sales[sales["sale_date"].str.startswith(month)].reset_index(drop=True)


def _count_materializations(instance: dg.DagsterInstance, month: str) -> int:
    return len(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("clean_sales"), asset_partitions=[month]), limit=100
        ).records
    )


def _other_month_untouched(instance, landing: LocalLandingZone, before: dict) -> None:
    """The other month's files (so its run key) are unchanged and nothing re-materialized it."""
    assert month_digest(landing.list_files(), OTHER) == before["digest"]
    assert _count_materializations(instance, OTHER) == before["materializations"] == 1


def _raw_meta(result: dg.ExecuteInProcessResult) -> dict:
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("raw_sales")
    )


def _clean(result: dg.ExecuteInProcessResult) -> pd.DataFrame:
    return result.output_for_node("clean_sales", "clean_sales")


def _ingest_raw_and_clean(
    month: str, instance, landing, storage, settings: ProjectConfigResource | None = None
) -> dg.ExecuteInProcessResult:
    """raw -> clean only (the model-side features are helper A's): what ingest guarantees."""
    return ingest_month(
        month, instance, landing, storage, settings, ["raw_sales", "clean_sales", "quarantined_sales"]
    )


# ---------------------------------------------------------------- row 1: an unreadable file beside a good one
UNREADABLE = {
    "empty.csv": (b"", "empty file (0 bytes)"),
    "blank.csv": (b"\n\n  \n", "empty file (no header line)"),
    "photo.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "cannot decode as utf-8"),
    "notes.csv": (b"just a line of text\nanother one\n", "not a table: one column"),
    "broken.parquet": (b"PAR1 not really", "not a Parquet file"),
    "broken.csv.gz": (b"not gzip at all", "not a gzip file"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_file_reason(name: str) -> None:
    from homeprice_assets.config import ReadOptions
    from homeprice_assets.ingest.reading import UnreadableFile, parse_landed

    data, reason = UNREADABLE[name]
    with pytest.raises(UnreadableFile, match=re.escape(reason)):
        parse_landed(name, data, ReadOptions())


def test_unreadable_files_are_set_aside_and_the_month_goes_on(
    instance, landing, storage, bundled_sales, landed
) -> None:
    for name in ("empty.csv", "photo.csv"):
        landing.write_bytes(f"{MONTH}/{name}", UNREADABLE[name][0])
    result = ingest_month(MONTH, instance, landing, storage)
    assert result.success  # the month is not held back
    expected = _rows(bundled_sales, MONTH)
    assert set(_clean(result)["sale_id"]) == set(expected["sale_id"])  # every good row is clean
    meta = _raw_meta(result)
    assert meta["quarantined_files"].value == 2
    reasons = {f["key"]: f["reason"] for f in meta["quarantined_file_reasons"].value}
    assert reasons[f"{MONTH}/empty.csv"] == "empty file (0 bytes)"
    assert "cannot decode as utf-8" in reasons[f"{MONTH}/photo.csv"]
    check = check_results(result)["readable_files"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR  # alerted
    assert "2 of 3 file(s) set aside" in check.description
    _other_month_untouched(instance, landing, landed)


def test_month_whose_only_file_is_empty_says_so(instance, landing, storage) -> None:
    landing.write_bytes(f"{MONTH}/empty.csv", b"")
    result = ingest_month(MONTH, instance, landing, storage)
    assert not result.success
    check = check_results(result)["required_columns"]
    assert not check.passed
    assert f"{MONTH}/empty.csv: empty file (0 bytes)" in check.description


# ---------------------------------------------------------------- row 2: a semicolon-delimited export
def test_semicolon_export_is_sniffed(instance, landing, storage, bundled_sales, landed) -> None:
    rows = _rows(bundled_sales, MONTH)
    landing.write_bytes(f"sales_{MONTH}.csv", rows.to_csv(index=False, sep=";").encode())
    result = ingest_month(MONTH, instance, landing, storage)
    assert result.success
    assert set(_clean(result)["sale_id"]) == set(rows["sale_id"])
    [described] = _raw_meta(result)["files"].value
    assert described["delimiter"] == "semicolon"  # the guess is reported
    _other_month_untouched(instance, landing, landed)


def test_semicolon_export_with_decimal_commas_through_config(
    instance, landing, storage, bundled_sales, landed
) -> None:
    rows = _rows(bundled_sales, MONTH)
    theirs = rows.copy()
    for col in ("baths", "latitude", "longitude"):
        theirs[col] = theirs[col].str.replace(".", ",", regex=False)
    landing.write_bytes(f"agency_b/{MONTH}/export.csv", theirs.to_csv(index=False, sep=";").encode())
    landing.write_bytes(f"sales_{MONTH}.csv", b"")  # the original replaced by the agency's export
    settings = ProjectConfigResource(
        overrides={"data": {"sources": [{"glob": "agency_b/*", "delimiter": ";", "decimal": ","}]}}
    )
    result = ingest_month(MONTH, instance, landing, storage, settings)
    assert result.success
    clean = _clean(result).set_index("sale_id").sort_index()
    assert set(clean.index) == set(rows["sale_id"])
    expected = rows.set_index("sale_id").sort_index()
    pd.testing.assert_series_equal(
        clean["latitude"], expected["latitude"].astype(float), check_names=False, check_index_type=False
    )
    assert clean["baths"].sum() == pytest.approx(expected["baths"].astype(float).sum())
    _other_month_untouched(instance, landing, landed)


def test_wrong_configured_delimiter_sets_the_file_aside(
    instance, landing, storage, bundled_sales, landed
) -> None:
    rows = _rows(bundled_sales, MONTH)
    landing.write_bytes(f"{MONTH}/piped.csv", rows.iloc[:10].to_csv(index=False, sep="|").encode())
    settings = ProjectConfigResource(
        overrides={"data": {"sources": [{"glob": "*/piped.csv", "delimiter": ";"}]}}
    )
    result = ingest_month(MONTH, instance, landing, storage, settings)
    assert result.success
    assert set(_clean(result)["sale_id"]) == set(rows["sale_id"])
    [aside] = _raw_meta(result)["quarantined_file_reasons"].value
    assert "not a table: one column with semicolon as delimiter" in aside["reason"]
    assert "data.sources" in aside["reason"]  # says what to change
    _other_month_untouched(instance, landing, landed)


# ---------------------------------------------------------------- row 3: a Latin-1 export with accents
def test_latin1_export_needs_and_honours_the_configured_encoding(
    instance, landing, storage, bundled_sales, landed
) -> None:
    rows = _rows(bundled_sales, MONTH).copy()
    rows.loc[:49, "use_type"] = "maison détachée"
    landing.write_bytes(f"sales_{MONTH}.csv", rows.to_csv(index=False).encode("latin-1"))

    refused = ingest_month(MONTH, instance, landing, storage)
    check = check_results(refused)["required_columns"]
    assert not refused.success and "cannot decode as utf-8: byte 0xe9" in check.description
    assert "data.read.encoding" in check.description  # the setting to change, no traceback

    settings = ProjectConfigResource(overrides={"data": {"read": {"encoding": "latin-1"}}})
    result = ingest_month(MONTH, instance, landing, storage, settings)
    assert result.success
    clean = _clean(result)
    assert set(clean["sale_id"]) == set(rows["sale_id"])
    assert (clean["use_type"] == "maison détachée").sum() == 50
    _other_month_untouched(instance, landing, landed)


def test_utf8_bom_is_honoured_and_reported(instance, landing, storage, bundled_sales, landed) -> None:
    rows = _rows(bundled_sales, MONTH)
    landing.write_bytes(f"sales_{MONTH}.csv", rows.to_csv(index=False).encode("utf-8-sig"))
    result = ingest_month(MONTH, instance, landing, storage)
    assert result.success
    assert set(_clean(result)["sale_id"]) == set(rows["sale_id"])  # "pinx", not "\ufeffpinx"
    assert _raw_meta(result)["files"].value[0]["encoding"] == "utf-8-sig (byte-order mark)"
    _other_month_untouched(instance, landing, landed)


# ---------------------------------------------------------------- row 4: a file whose path has no month
def test_file_without_month_is_split_by_sale_date(instance, landing, storage, bundled_sales, landed) -> None:
    march, april = _rows(bundled_sales, MONTH), _rows(bundled_sales, "2012-04")
    landing.write_bytes(f"sales_{MONTH}.csv", b"")  # March now arrives only inside the undated export
    landing.write_bytes("exports/latest.csv", pd.concat([march, april]).to_csv(index=False).encode())
    landing.write_bytes("README.txt", b"where the exports come from")
    files = landing.list_files()
    assert {f.month for f in files if f.key == "exports/latest.csv"} == {MONTH, "2012-04"}
    for month, rows in ((MONTH, march), ("2012-04", april)):
        result = ingest_month(month, instance, landing, storage)
        assert result.success, month
        clean = _clean(result)
        assert set(clean["sale_id"]) == set(rows["sale_id"])
        meta = _raw_meta(result)
        # nothing on the landing zone ignored without a count
        assert meta["landing_files_in_no_month"].value == 1
        assert meta["landing_files_in_no_month_reasons"].value[0]["key"] == "README.txt"
    # lineage keeps the line of the file each row came from
    assert clean["_row_number"].min() == len(march) + 1
    _other_month_untouched(instance, landing, landed)


def test_file_without_month_refused_loudly_when_required(
    instance, landing, storage, bundled_sales, landed
) -> None:
    settings = ProjectConfigResource(overrides={"data": {"require_month_in_path": True}})
    landing.write_bytes("exports/latest.csv", _rows(bundled_sales, "2012-04").to_csv(index=False).encode())
    scan = landing.scan(settings.get().data)
    assert "2012-04" not in {f.month for f in scan.files}
    [aside] = scan.set_aside
    assert aside.key == "exports/latest.csv" and "data.require_month_in_path is true" in aside.reason
    result = ingest_month(MONTH, instance, landing, storage, settings)
    assert result.success
    assert _raw_meta(result)["landing_files_in_no_month"].value == 1
    logs = [e.message for e in instance.all_logs(result.run_id) if e.level == 30]  # WARNING
    assert any("exports/latest.csv" in m and "require_month_in_path" in m for m in logs)
    _other_month_untouched(instance, landing, landed)


# ---------------------------------------------------------------- row 5: no sale id and no parcel id
def test_export_without_ids_keeps_different_homes_apart(
    instance, landing, storage, bundled_sales, landed
) -> None:
    rows = _rows(bundled_sales, MONTH)
    theirs = rows.drop(columns=["sale_id", "pinx"])
    distinct = theirs.drop_duplicates()
    # an exact duplicate row inside the file is counted like a repeat across files
    theirs = pd.concat([theirs, theirs.iloc[[5]]], ignore_index=True)
    landing.write_bytes(f"sales_{MONTH}.csv", theirs.to_csv(index=False).encode())
    result = ingest_month(MONTH, instance, landing, storage)
    assert result.success
    clean = _clean(result)
    assert len(clean) == len(distinct)  # every distinct sale is clean, none as duplicate_sale
    assert clean["sale_id"].is_unique and clean["sale_id"].str.startswith("h").all()
    meta = _raw_meta(result)
    assert meta["repeated_rows_within_a_file"].value == len(theirs) - len(distinct)
    assert check_results(result)["quarantine_rate"].metadata["rule_duplicate_sale"].value == 0
    _other_month_untouched(instance, landing, landed)


# ---------------------------------------------------------------- row 6 (asset side): missing columns named
def test_missing_required_columns_named_in_the_check(instance, landing, storage, bundled_sales) -> None:
    rows = _rows(bundled_sales, MONTH).drop(columns=["tot_sf", "area"])
    landing.write_bytes(f"sales_{MONTH}.csv", rows.to_csv(index=False).encode())
    result = ingest_month(MONTH, instance, landing, storage)
    check = check_results(result)["required_columns"]
    assert not check.passed
    assert "'living_sf' (source column 'tot_sf')" in check.description
    assert "'location' (source column 'area')" in check.description


# ---------------------------------------------------------------- row 7: data without coordinates
def test_data_without_coordinates_ingests(instance, landing, storage, bundled_sales, landed) -> None:
    rows = _rows(bundled_sales, MONTH).drop(columns=["latitude", "longitude"])
    landing.write_bytes(f"sales_{MONTH}.csv", rows.to_csv(index=False).encode())
    result = _ingest_raw_and_clean(MONTH, instance, landing, storage)
    assert result.success
    clean = _clean(result)
    assert set(clean["sale_id"]) == set(rows["sale_id"])
    assert clean["latitude"].isna().all() and clean["longitude"].isna().all()
    checks = check_results(result)
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    assert "latitude" in checks["null_rates"].metadata["unmapped_columns"].value
    _other_month_untouched(instance, landing, landed)


def test_half_a_coordinate_is_quarantined(bundled_sales) -> None:
    from homeprice_assets.ingest.rules import clean_sales as clean_rows

    rows = _rows(bundled_sales, MONTH).copy()
    rows.loc[:2, "longitude"] = None
    result = clean_rows(rows, load_config().data, month=MONTH)
    assert result.counts_by_rule["implausible_coordinates"] == 3
    assert len(result.clean) == len(rows) - 3


# ---------------------------------------------------------------- row 9: back-filled history
def test_backfilled_history_is_not_noise(instance, landing, storage, bundled_sales) -> None:
    land_history(landing, load_config().data, since="2012-01", until=MONTH)
    sparse = _rows(bundled_sales, "2012-01").drop(columns=["beds", "baths"])  # a source without them
    landing.write_bytes("sales_2012-01.csv", sparse.to_csv(index=False).encode())
    result = ingest_month("2012-01", instance, landing, storage)  # two months behind the newest landed
    assert result.success
    checks = check_results(result)
    assert checks["freshness"].passed and checks["freshness"].metadata["back_filled"].value
    assert checks["null_rates"].passed
    assert "beds" in checks["null_rates"].metadata["unmapped_columns"].value


def test_parse_of_csv_text_is_exact() -> None:
    """Raw data stays text: leading zeros and long decimals come through unchanged."""
    from homeprice_assets.config import ReadOptions
    from homeprice_assets.ingest.reading import parse_landed

    parsed = parse_landed("x.csv", b"a;b\n007;47.5613803736604\n", ReadOptions())
    assert parsed.frame.to_dict("records") == [{"a": "007", "b": "47.5613803736604"}]
    assert parsed.sniffed == {"delimiter": "semicolon"}
