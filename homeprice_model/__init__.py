"""homeprice_model: the code of the served home-price model, and nothing else.

It is logged with every model version (MLflow ``code_paths``), so a registered version loads wherever
NumPy, pandas, SciPy, LightGBM and MLflow are installed, without the ``homeprice_assets`` pipeline package:
renaming or moving modules in the pipeline never breaks loading an old champion or rolling back to it.

Rules that keep it so: this package imports nothing from ``homeprice_assets`` (a test loads a registered
version in a process where importing ``homeprice_assets`` fails), reads no configuration and no environment,
and keeps the class paths pickled into models (``homeprice_model.model.HomePriceModel``,
``homeprice_model.market_index.MarketIndex`` / ``IndexParams``) importable for as long as such models may
be served.

How MLflow 3.17 loads it: ``code_paths=[<this directory>]`` copies the package to ``<model>/code/
homeprice_model``; ``mlflow.pyfunc.load_model`` prepends ``<model>/code`` to ``sys.path`` and then unpickles
the model. MLflow does not purge modules already imported, so in a process that has imported
``homeprice_model`` already (the Dagster code location, the service), the installed copy is used and the
logged copy is the fallback for processes that lack it.
"""

from homeprice_model.features import (
    CATEGORICAL_FEATURES,
    COORDINATE_FEATURES,
    COORDINATE_INPUTS,
    FEATURE_VERSION,
    FEATURES,
    INPUT_FIELDS,
    NUMERIC_FEATURES,
    REQUIRED_INPUTS,
    TIME_ORIGIN,
    feature_columns,
    make_features,
)
from homeprice_model.market_index import IndexParams, MarketIndex
from homeprice_model.model import (
    BOUNDED_FIELDS,
    PRICE_COLUMNS,
    HomePriceModel,
    OutOfBoundsError,
    RequestError,
    UnknownLocationError,
)

# Bumped when the model code changes in a way a logged model's metadata should record.
# 3: bagged boosters (``HomePriceModel.extra_boosters``); code before it would serve the first booster only.
# 4: the hedonic offset (``HomePriceModel.hedonic``); code before it would leave it out of every price.
# 5: ``renovated`` unknown (NaN) without an effective age: a monthly update of an older champion would add
#    trees that learnt NaN to trees that learnt 0 (a full refit instead).
MODEL_CODE_VERSION = "5"

__all__ = [
    "BOUNDED_FIELDS",
    "CATEGORICAL_FEATURES",
    "COORDINATE_FEATURES",
    "COORDINATE_INPUTS",
    "FEATURES",
    "FEATURE_VERSION",
    "INPUT_FIELDS",
    "MODEL_CODE_VERSION",
    "NUMERIC_FEATURES",
    "PRICE_COLUMNS",
    "REQUIRED_INPUTS",
    "TIME_ORIGIN",
    "HomePriceModel",
    "IndexParams",
    "MarketIndex",
    "OutOfBoundsError",
    "RequestError",
    "UnknownLocationError",
    "feature_columns",
    "make_features",
]
