"""Write the prediction service's OpenAPI document to docs/openapi.json, from bento/service.py as it is now.

    .venv/bin/python docs/export_openapi.py           # (re)write docs/openapi.json
    .venv/bin/python docs/export_openapi.py --check   # exit 1 when docs/openapi.json is stale

The document is BentoML's own (what `bentoml serve` answers at /docs.json), generated without starting the
service or loading a model. Two fields are set so that it describes homeprice, not the Bento it runs in:
``info.description`` (the service's docstring, instead of BentoML's generic text) and ``info.version`` (the
project's version, instead of the build tag). A test keeps the committed file equal to this output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "openapi.json"


def service_openapi() -> dict:
    """The OpenAPI document of ``bento.service:HomePrice``."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from bento.service import HomePrice

    spec = HomePrice.openapi_spec.asdict()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    spec["info"]["description"] = (HomePrice.inner.__doc__ or "").strip()
    spec["info"]["version"] = project["version"]
    return spec


def render(spec: dict) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed document")
    args = parser.parse_args(argv)
    text = render(service_openapi())
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `python docs/export_openapi.py`", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is current")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text):,} bytes, {len(json.loads(text)['paths'])} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
