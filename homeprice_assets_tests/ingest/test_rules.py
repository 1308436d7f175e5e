"""Each kind of bad row is caught by its named rule; good rows all survive; nothing is lost."""

import pandas as pd
import pytest

from homeprice_assets.config import SourceReadOptions, load_config
from homeprice_assets.ingest.reading import row_months
from homeprice_assets.ingest.rules import RULES, SchemaError, clean_sales, combine_landed, content_version

CONFIG = load_config().data


@pytest.fixture(scope="module")
def month_rows(bundled_sales: pd.DataFrame) -> pd.DataFrame:
    rows = bundled_sales[bundled_sales["sale_date"].str.startswith("2014-06")].reset_index(drop=True)
    assert len(rows) > 500
    return rows


BAD_CASES = {
    "missing_required_value": ("sale_price", ""),
    "unparsable_date": ("sale_date", "2014-13-45"),
    "date_outside_partition": ("sale_date", "2013-01-15"),
    "non_numeric_value": ("tot_sf", "big"),
    # an optional number no sale can have ("inf" parses as a number): quarantined, not left to stop the
    # month at the finite_features check
    "non_numeric_value:optional": ("lot_sf", "inf"),
    # a "no value" marker is missing in an optional number, but a required value must be there: a location
    # "NULL" was kept as a neighbourhood of its own
    "missing_required_value:number": ("sale_price", "N/A"),
    "missing_required_value:text": ("area", " NULL "),
    "nonpositive_price": ("sale_price", "-5000"),
    "nonpositive_living_area": ("tot_sf", "0"),
    "implausible_coordinates": ("latitude", "123.4"),
}


@pytest.mark.parametrize("rule", sorted(BAD_CASES))
def test_each_bad_value_is_quarantined_by_its_rule(month_rows: pd.DataFrame, rule: str) -> None:
    column, value = BAD_CASES[rule]
    rule = rule.split(":")[0]
    raw = month_rows.copy()
    bad_idx = [3, 10, 42]
    raw.loc[bad_idx, column] = value
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert result.counts_by_rule[rule] == len(bad_idx)
    assert sum(result.counts_by_rule.values()) == len(bad_idx)
    assert set(result.quarantine["sale_id"]) == set(raw.loc[bad_idx, "sale_id"])
    assert (result.quarantine["rule"] == rule).all()
    # every good row reaches clean, with its id
    good_ids = set(raw.drop(index=bad_idx)["sale_id"])
    assert set(result.clean["sale_id"]) == good_ids
    assert len(result.clean) + len(result.quarantine) == len(raw)


def test_repeated_index_labels_clean_as_a_numbered_frame(month_rows: pd.DataFrame) -> None:
    """``pd.concat`` of two files keeps each file's labels: the rules align rows by label."""
    raw = month_rows.copy()
    raw.loc[[3, 10], "sale_price"] = "-5000"
    halves = [raw.iloc[: len(raw) // 2], raw.iloc[len(raw) // 2 :].reset_index(drop=True)]
    repeated = clean_sales(pd.concat(halves), CONFIG, month="2014-06")
    numbered = clean_sales(pd.concat(halves, ignore_index=True), CONFIG, month="2014-06")
    pd.testing.assert_frame_equal(repeated.clean, numbered.clean)
    pd.testing.assert_frame_equal(repeated.quarantine, numbered.quarantine)
    assert {k: v for k, v in repeated.counts_by_rule.items() if v} == {"nonpositive_price": 2}


def test_nulls_in_optional_columns_are_kept(month_rows: pd.DataFrame) -> None:
    """None, and the markers exports write for "no value" (R's NA, SQL's NULL, N/A), are missing values."""
    raw = month_rows.copy()
    raw.loc[:9, "beds"] = None
    markers = ["NA", "null", "NULL", "N/A", " nan ", "None"]
    raw.loc[10 : 9 + len(markers), "baths"] = markers
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert len(result.clean) == len(raw)
    assert result.clean["beds"].isna().sum() == 10
    assert result.clean["baths"].isna().sum() == len(markers)


def test_null_markers_in_ids_are_missing_ids(month_rows: pd.DataFrame) -> None:
    """Sale ids "NULL" were one id (all but the first quarantined as duplicates); parcel ids "n/a" one
    parcel. Now they are missing: the sale ids are derived, the parcels unknown."""
    raw = month_rows.copy()
    raw.loc[:19, "sale_id"] = "NULL"
    raw.loc[:9, "pinx"] = " n/a "
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert len(result.clean) == len(raw) and len(result.quarantine) == 0
    clean = result.clean.set_index(raw.index)
    assert clean["parcel_id"].iloc[:10].isna().all() and clean["parcel_id"].iloc[10:].notna().all()
    assert clean["sale_id"].notna().all() and clean["sale_id"].is_unique
    assert not clean["sale_id"].isin(["NULL"]).any()


def test_a_future_date_is_quarantined_and_makes_no_month_of_its_own(month_rows: pd.DataFrame) -> None:
    """A typo (2104 for 2014) in a file whose path names no month: the row goes to the file's newest real
    month and is quarantined there; before, it made a month 2104-06 that passed its checks and anchored
    every training window in 2104."""
    raw = month_rows.copy()
    raw.loc[7, "sale_date"] = "2104-06-04"
    assert set(row_months(raw, "export.csv", CONFIG)) == {"2014-06"}
    raw.loc[8, "sale_date"] = "not a date"  # so does an unparsable one (its month's max raised before)
    assert set(row_months(raw, "export.csv", CONFIG)) == {"2014-06"}
    result = clean_sales(raw, CONFIG)  # no month given: the date rules alone
    assert result.counts_by_rule["unparsable_date"] == 2
    assert (
        result.quarantine.set_index("sale_id")
        .loc[raw.loc[7, "sale_id"], "detail"]
        .endswith("(in the future)")
    )


def test_dates_with_utc_offsets_keep_their_local_day(month_rows: pd.DataFrame) -> None:
    """Timestamps with offsets that differ between rows (a daylight-saving change) are read as the local
    date and time of the sale; before, pandas returned objects and the month failed without a field named."""
    raw = month_rows.head(4).copy()
    raw["sale_date"] = [
        "2014-06-03T10:00:00-07:00",
        "2014-06-30T23:30:00-08:00",  # in UTC, July: still a June sale
        "2014-06-15T08:00:00Z",
        "2014-06-16",
    ]
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert len(result.clean) == 4
    assert [str(d.date()) for d in result.clean["sale_date"]] == [
        "2014-06-03",
        "2014-06-30",
        "2014-06-15",
        "2014-06-16",
    ]


def test_duplicate_sale_id_is_quarantined_not_dropped(month_rows: pd.DataFrame) -> None:
    raw = pd.concat([month_rows, month_rows.iloc[[0]].assign(sale_price="1")], ignore_index=True)
    raw.loc[len(raw) - 1, "sale_price"] = str(int(float(raw.loc[0, "sale_price"])) + 1000)
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert result.counts_by_rule["duplicate_sale"] == 1
    assert result.quarantine.iloc[0]["sale_id"] == month_rows.iloc[0]["sale_id"]
    assert len(result.clean) == len(month_rows)


def test_bad_row_does_not_shadow_its_corrected_reexport(month_rows: pd.DataFrame) -> None:
    """Issue 8: a bad row and its corrected re-export share a sale id; only valid rows are deduplicated."""
    good = month_rows.iloc[[7]]
    bad = good.assign(sale_price="-1")  # the first export, wrong; the correction comes later in file order
    raw = pd.concat([bad, month_rows], ignore_index=True)
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert result.counts_by_rule["nonpositive_price"] == 1
    assert result.counts_by_rule["duplicate_sale"] == 0
    assert set(result.clean["sale_id"]) == set(month_rows["sale_id"])
    row = result.clean.set_index("sale_id").loc[good["sale_id"].iloc[0]]
    assert row["sale_price"] == float(good["sale_price"].iloc[0])


def test_derived_ids_tell_different_homes_apart(month_rows: pd.DataFrame) -> None:
    """Without sale and parcel ids, two homes sold the same day for the same price keep apart."""
    raw = month_rows.drop(columns=["sale_id", "pinx"]).iloc[:2].copy()
    raw["sale_date"] = "2014-06-10"
    raw["sale_price"] = "500000"
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert len(result.clean) == 2 and result.clean["sale_id"].is_unique
    # the same home, written differently (1800 vs 1800.0), is one sale
    again = pd.concat([raw.iloc[[0]], raw.iloc[[0]].assign(tot_sf=raw["tot_sf"].iloc[0] + ".0")])
    result = clean_sales(again.reset_index(drop=True), CONFIG, month="2014-06")
    assert result.counts_by_rule["duplicate_sale"] == 1


def test_with_parcel_id_a_corrected_attribute_is_a_repeat(month_rows: pd.DataFrame) -> None:
    raw = month_rows.drop(columns=["sale_id"]).iloc[[0, 0]].reset_index(drop=True)
    raw.loc[1, "beds"] = "9"
    result = clean_sales(raw, CONFIG, month="2014-06")
    assert result.counts_by_rule["duplicate_sale"] == 1


def test_each_source_its_date_format_and_decimal_mark(month_rows: pd.DataFrame) -> None:
    """Two exports of one month: one ISO with points, one day-first with decimal commas (data.sources)."""
    config = CONFIG.model_copy(
        update={
            "sources": [
                SourceReadOptions(glob="eu/*", date_format="%d.%m.%Y", decimal=","),
            ]
        }
    )
    us = month_rows.iloc[:100].assign(_source_file="us/2014-06.csv")
    eu = month_rows.iloc[100:200].copy()
    eu["sale_date"] = pd.to_datetime(eu["sale_date"]).dt.strftime("%d.%m.%Y")
    eu["baths"] = eu["baths"].str.replace(".", ",", regex=False)
    eu["latitude"] = eu["latitude"].str.replace(".", ",", regex=False)  # longitude left with a point
    eu["sale_price"] = eu["sale_price"].map(lambda v: f"{int(float(v)):,}".replace(",", "."))  # 1.234.567
    eu = eu.assign(_source_file="eu/2014-06.csv")
    result = clean_sales(pd.concat([us, eu], ignore_index=True), config, month="2014-06")
    assert sum(result.counts_by_rule.values()) == 0
    clean = result.clean.set_index("sale_id")
    expected = month_rows.iloc[:200].set_index("sale_id").loc[list(clean.index)]
    assert (clean["sale_date"].to_numpy() == pd.to_datetime(expected["sale_date"]).to_numpy()).all()
    for col in ("sale_price", "baths", "latitude", "longitude"):
        assert (clean[col].to_numpy() == expected[col].astype(float).to_numpy()).all(), col


def test_missing_required_column_names_it(month_rows: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match=r"'living_sf' \(source column 'tot_sf'\)"):
        clean_sales(month_rows.drop(columns=["tot_sf"]), CONFIG, month="2014-06")


def test_a_column_under_its_canonical_name_is_not_shadowed_by_the_packaged_mapping(
    month_rows: pd.DataFrame, tmp_path
) -> None:
    """The packaged mapping names the bundled data's columns (parcel_id: pinx, waterfront: wfnt, ...). A user
    config that maps only some columns keeps it, so a source's own ``parcel_id`` or ``waterfront`` column
    (no ``pinx``, no ``wfnt``) must still be read, and so must ``living_sf`` left unmapped."""
    theirs = month_rows.rename(
        columns={"pinx": "parcel_id", "wfnt": "waterfront", "tot_sf": "living_sf", "sale_price": "PRICE"}
    )
    user = tmp_path / "homeprice.yaml"
    user.write_text("data:\n  columns:\n    sale_price: PRICE\n")
    config = load_config(user).data
    clean = clean_sales(theirs, config, month="2014-06").clean
    ours = clean_sales(month_rows, CONFIG, month="2014-06").clean
    assert len(clean) == len(ours) > 500
    for column in ("parcel_id", "waterfront", "living_sf", "sale_price"):
        assert clean[column].notna().all(), column
        assert clean[column].tolist() == ours[column].tolist(), column
    # a mapping the user wrote is kept as written: its column missing fails, naming it
    user.write_text("data:\n  columns:\n    sale_price: PRICE\n    living_sf: SqFtLiving\n")
    with pytest.raises(SchemaError, match=r"'living_sf' \(source column 'SqFtLiving'\)"):
        clean_sales(theirs, load_config(user).data, month="2014-06")
    # where the mapped column is there, the mapping wins over a same-named column
    both = month_rows.assign(parcel_id="not the parcel")
    assert (clean_sales(both, CONFIG, month="2014-06").clean["parcel_id"] != "not the parcel").all()


def test_typed_output(month_rows: pd.DataFrame) -> None:
    clean = clean_sales(month_rows, CONFIG, month="2014-06").clean
    assert str(clean["sale_price"].dtype) == "float64"
    assert pd.api.types.is_datetime64_any_dtype(clean["sale_date"])
    assert (clean["sale_month"] == "2014-06").all()
    assert set(RULES) >= {"duplicate_sale", "nonpositive_price"}


def test_file_landed_twice_adds_no_rows_and_keeps_version(month_rows: pd.DataFrame) -> None:
    once, repeated_once, _ = combine_landed([("a/2014-06.csv", "h1", month_rows)])
    twice, repeated, within = combine_landed(
        [("a/2014-06.csv", "h1", month_rows), ("b/2014-06.csv", "h1", month_rows)]
    )
    overlap, _, _ = combine_landed(
        [
            ("a/2014-06.csv", "h1", month_rows.iloc[:300]),
            ("b/2014-06.csv", "h2", month_rows.iloc[200:].reset_index(drop=True)),
        ]
    )
    assert repeated_once == 0 and repeated == len(month_rows) and within == 0
    assert len(twice) == len(once) == len(overlap) == len(month_rows)
    assert content_version(once) == content_version(twice) == content_version(overlap)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            ["2014-07-03", "2014-07-04 10:30:00", "2014", "June 2014", "13/07/2014", None],
            ["2014-07-03", "2014-07-04", None, None, None, None],
        ),
        # whatever comes first: nothing but full ISO dates is read (the format is not inferred from row 1)
        (["2014", "2014-07-03", "2014-07"], [None, "2014-07-03", None]),
        (["13/07/2014", "2014-07-03", "03/07/2014"], [None, "2014-07-03", None]),
        # spaces around, a Z, fractional seconds, offsets that differ (daylight saving): the local day
        (
            [" 2014-07-03T10:00:00-07:00 ", " 2014-11-03T23:30:00.5-08:00 ", "2014-07-05T01:00:00Z"],
            ["2014-07-03", "2014-11-03", "2014-07-05"],
        ),
    ],
)
def test_only_iso_dates_are_read_without_a_format_and_nothing_is_guessed(
    values: list, expected: list
) -> None:
    """``data.date_format: null`` means ISO 8601: a column mixing dates with date-times is read whole; a
    year, a month, a month name or a day-first date stay unparsable (quarantined), never guessed."""
    from homeprice_assets.ingest.reading import parse_sale_dates

    parsed = parse_sale_dates(pd.Series(values), None)
    assert str(parsed.dtype) == "datetime64[ns]"
    assert [str(d.date()) if pd.notna(d) else None for d in parsed] == expected


def test_the_date_setting_is_suggested_only_for_dates_that_did_not_read() -> None:
    """A month failed by typo'd future dates is not a date-format problem: no hint to change the format."""
    from homeprice_assets.ingest.checks import quarantine_rate

    def description(detail: str) -> str:
        quarantine = pd.DataFrame({"rule": ["unparsable_date"] * 3, "detail": [detail] * 3})
        check = quarantine_rate({"unparsable_date": 3}, 10, CONFIG, quarantine)
        assert not check.passed
        return str(check.description)

    unread = description("sale_date=13/01/2016")
    assert "e.g. unparsable_date sale_date=13/01/2016 (dates are read as ISO 8601" in unread
    future = description("sale_date after 2026-12-26 (in the future)")
    assert future.endswith("e.g. unparsable_date sale_date after 2026-12-26 (in the future)")
