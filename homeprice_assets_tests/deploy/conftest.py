"""The serving tests' trained registry for the Prometheus test (imported here: a fixture of this folder)."""

from homeprice_assets_tests.serving.conftest import registry  # noqa: F401
