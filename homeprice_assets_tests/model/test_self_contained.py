"""A registered version loads and predicts without ``homeprice_assets``; versions pickled before the model
code moved (class paths under ``homeprice_assets.training``) still load and predict."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient

import homeprice_model
from homeprice_model import INPUT_FIELDS, HomePriceModel

from .conftest import Small

# Blocks every import of homeprice_assets, and takes the editable install's finder away, so the only
# homeprice_model the process can import is the copy logged with the model (MLflow puts <model>/code on
# sys.path while loading).
BLOCKED_LOAD = """
import json, sys
class Block:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "homeprice_assets" or name.startswith("homeprice_assets."):
            raise ImportError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, Block)
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
try:
    import homeprice_model
    raise SystemExit("homeprice_model importable before loading: the test would prove nothing")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.stdin, orient="split", dtype={"location": str})
rows["sale_date"] = pd.to_datetime(rows["sale_date"])
for c in rows.columns:
    if c not in ("location", "sale_date"):
        rows[c] = rows[c].astype("float64")
inner = model.unwrap_python_model()
cols = {c: rows[c].to_numpy() for c in rows.columns}
print(json.dumps({
    "price": model.predict(rows)["price"].tolist(),
    "columns": inner.predict_columns(cols)["price"].tolist(),
    "module_file": sys.modules["homeprice_model"].__file__,
    "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
    "assets_loaded": sorted(m for m in sys.modules if m.startswith("homeprice_assets")),
    "bounds": inner.bounds,
}))
"""


def register_saved(saved: Path, tmp_path: Path, name: str) -> str:
    """Upload a ``save_price_model`` directory into a run and register it, with the client API only (as the
    registry resource does), in a SQLite store of its own; returns the tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("self-contained", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(saved), "model")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_terminated(run.info.run_id)
    assert str(version.version) == "1"
    return uri


def test_registered_version_predicts_where_homeprice_assets_cannot_be_imported(
    small: Small, saved: Path, tmp_path: Path
) -> None:
    name = f"selfcontained-{uuid.uuid4().hex[:6]}"
    uri = register_saved(saved, tmp_path, name)
    rows = small.inputs.head(5)
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_LOAD, f"models:/{name}/1"],
        input=rows.to_json(orient="split", date_format="iso"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: nothing importable from the working directory
        env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": uri, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["assets_loaded"] == []
    assert out["class"] == "homeprice_model.model.HomePriceModel"
    # the package came from the model's own code/ directory, not from this checkout
    assert "/code/homeprice_model/" in out["module_file"]
    assert not out["module_file"].startswith(str(Path(homeprice_model.__file__).parent))
    expected = small.model.predict(None, rows)["price"].to_numpy()
    np.testing.assert_allclose(out["price"], expected, rtol=1e-9)
    np.testing.assert_allclose(out["columns"], expected, rtol=1e-9)
    assert out["bounds"] == small.model.bounds


def test_saved_model_carries_code_features_and_metadata(small: Small, saved: Path) -> None:
    assert (saved / "code" / "homeprice_model" / "model.py").is_file()
    assert not list((saved / "code").rglob("__pycache__"))
    features = json.loads((saved / "features.json").read_text())
    assert features["features"] == small.model.feature_names
    # trained on sales with parcel ids: the model also takes the optional parcel_id (repeat sales)
    assert features["input_fields"] == small.model.input_fields == [*INPUT_FIELDS, "parcel_id"]
    meta = yaml.safe_load((saved / "MLmodel").read_text())["metadata"]
    assert meta["bounds"] == small.model.bounds
    assert meta["bounds"]["min_latitude"] == 47.0  # the default configuration's data.bounds
    assert meta["input_fields"] == small.model.input_fields
    requirements = (saved / "requirements.txt").read_text()
    assert "lightgbm==" in requirements and "scikit-learn" not in requirements
    signature = mlflow.models.Model.load(str(saved)).signature
    required = {s.name for s in signature.inputs.inputs if s.required}
    assert required == {"location", "living_sf"}


def test_homeprice_model_imports_nothing_from_homeprice_assets() -> None:
    package = Path(homeprice_model.__file__).parent
    allowed = {"homeprice_model", "numpy", "pandas", "lightgbm", "mlflow", "scipy", "shap", "__future__"}
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{source.name} imports {n}"


PICKLED_BEFORE_THE_MOVE = (
    "booster",
    "index",
    "feature_names",
    "location_categories",
    "calibration_scores",
    "interval_level",
    "trained_through",
    "locations",
    "params",
    "input_fields",
    "feature_version",
    "facts",
    "comparables",
    "_explainer",
)


def _old_style_pickle(model: HomePriceModel) -> bytes:
    """``model`` as a release before the move pickled it: classes under ``homeprice_assets.training``,
    no ``bounds``. Protocol 2 writes class references as text lines, so they can be rewritten in place."""
    old = object.__new__(HomePriceModel)
    state = model.__getstate__()
    # exactly the attributes the last release before the move pickled: whatever was added since needs a
    # class-level default, or old versions stop loading (this test then fails)
    old.__dict__.update({k: state[k] for k in PICKLED_BEFORE_THE_MOVE})
    data = pickle.dumps(old, protocol=2)
    old_home = b"chomeprice_assets.training."
    moves = {
        b"chomeprice_model.model\nHomePriceModel\n": old_home + b"model\nHomePriceModel\n",
        b"chomeprice_model.market_index\nMarketIndex\n": old_home + b"market_index\nMarketIndex\n",
        b"chomeprice_model.market_index\nIndexParams\n": old_home + b"market_index\nIndexParams\n",
    }
    for new, previous in moves.items():
        assert new in data
        data = data.replace(new, previous)
    assert b"homeprice_model" not in data
    return data


def test_a_version_pickled_before_the_move_still_loads_and_predicts(
    small: Small, saved: Path, tmp_path: Path
) -> None:
    """Loaded as serving loads it (``mlflow.pyfunc.load_model``), from a model directory like an old
    release wrote: old class paths in ``python_model.pkl``, no ``code/`` directory."""
    old_dir = tmp_path / "old-model"
    shutil.copytree(saved, old_dir)
    shutil.rmtree(old_dir / "code")
    mlmodel = yaml.safe_load((old_dir / "MLmodel").read_text())
    pyfunc_conf = mlmodel["flavors"]["python_function"]
    pyfunc_conf.pop("code", None)
    (old_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    pickled = old_dir / pyfunc_conf.get("python_model", "python_model.pkl")
    assert pickled.is_file()
    pickled.write_bytes(_old_style_pickle(small.model))

    loaded = mlflow.pyfunc.load_model(str(old_dir))
    inner = loaded.unwrap_python_model()
    assert isinstance(inner, HomePriceModel) and inner.bounds is None
    rows = small.inputs.head(20)
    # the same state, unpickled under today's class paths: the shims must resolve to the same classes and
    # the class-level defaults stand in for what the old pickle lacks (bounds, interval horizons, ...)
    same_state = object.__new__(HomePriceModel)
    same_state.__dict__.update({k: small.model.__getstate__()[k] for k in PICKLED_BEFORE_THE_MOVE})
    expected = same_state.predict(None, rows)
    pd.testing.assert_frame_equal(loaded.predict(rows).reset_index(drop=True), expected)
    cols = {c: rows[c].to_numpy() for c in rows.columns}
    np.testing.assert_allclose(inner.predict_columns(cols)["price"], expected["price"], rtol=1e-9)
    assert (expected["price_lower"] < expected["price"]).all() and np.isfinite(expected["price_upper"]).all()
    # without recorded bounds only locations are checked
    inner.check_request({"location": ["6"], "latitude": [10.0]})
