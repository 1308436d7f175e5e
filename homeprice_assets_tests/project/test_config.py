"""Configuration is validated when it is loaded: a bad key fails at once, naming the key and the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from homeprice_assets.config import REPO_ROOT, load_config
from homeprice_assets.resources.config import ProjectConfigResource


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homeprice.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("promotion: {max_mdpe: 0.1}\n", "promotion.max_mdpe: Extra inputs are not permitted"),
        (
            "training: {interval_level: 1.5}\n",
            "training.interval_level: Input should be less than 1 (got 1.5)",
        ),
        ("monitoring: {drift: {reference_months: -3}}\n", "monitoring.drift.reference_months"),
        ("alerts: {dedup_minutes: soon}\n", "alerts.dedup_minutes"),
        ("serving: {currency: EUR}\n", "serving.currency: Extra inputs are not permitted"),
        ("rubbish: true\n", "rubbish: Extra inputs are not permitted"),
        # LightGBM ignores a parameter it does not know (quietly, at verbose -1): named at load instead
        (
            "training: {params: {num_leavs: 7, hedonic_ofset: false, min_child_samples: 5, "
            "blend: [{objective: huber, alpah: 0.1}]}}\n",
            "training.params: unknown parameter(s) 'blend.alpah' (did you mean 'alpha'?), 'hedonic_ofset' "
            "(did you mean 'hedonic_offset'?), 'num_leavs' (did you mean 'num_leaves'?)",
        ),
        ("- just\n- a list\n", "expected a mapping of sections"),
    ],
)
def test_bad_keys_fail_at_load_naming_key_and_file(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_are_validated_and_merged_key_by_key() -> None:
    config = ProjectConfigResource(overrides={"promotion": {"max_mdape": 0.1}}).get()
    assert config.promotion.max_mdape == 0.1
    assert config.promotion.min_ppe10 == load_config().promotion.min_ppe10  # the rest keeps its default
    with pytest.raises(ValueError, match=r"\+ overrides"):
        ProjectConfigResource(overrides={"training": {"window_months": 2}}).get()


@dg.asset
def reads_config(settings: ProjectConfigResource) -> float:
    return settings.get().promotion.max_mdape


def test_assets_receive_the_configuration_through_the_resource() -> None:
    result = dg.materialize(
        [reads_config],
        resources={"settings": ProjectConfigResource(overrides={"promotion": {"max_mdape": 0.07}})},
    )
    assert result.output_for_node("reads_config") == 0.07


def test_a_bad_file_stops_the_code_location_loading(tmp_path: Path) -> None:
    """``dagster dev`` would show this at load, before any run: the key and the file, no run half done."""
    path = _write(tmp_path, "promotion: {max_mdpe: 0.1}\n")
    done = subprocess.run(
        [sys.executable, "-c", "import homeprice_assets.definitions"],
        env={**os.environ, "HOMEPRICE_CONFIG": str(path)},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode != 0
    assert "promotion.max_mdpe: Extra inputs are not permitted" in done.stderr
    assert str(path) in done.stderr


def test_a_local_mlflow_store_is_put_in_wal_mode(tmp_path, monkeypatch) -> None:
    """`homeprice` puts a local MLflow SQLite store, existing or new, in WAL mode (a flush per commit)."""
    import sqlite3

    from homeprice_assets.config import apply_env_defaults

    existing = tmp_path / "old" / "mlflow.db"
    existing.parent.mkdir()
    sqlite3.connect(existing).execute("CREATE TABLE t (x)").connection.commit()
    monkeypatch.delenv("HOMEPRICE_PROFILE", raising=False)
    monkeypatch.setenv("HOMEPRICE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOMEPRICE_DAGSTER_STORAGE", str(tmp_path / "dagster"))
    for store in (existing, tmp_path / "new" / "mlflow.db"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        apply_env_defaults()
        assert sqlite3.connect(store).execute("PRAGMA journal_mode").fetchone() == ("wal",)
