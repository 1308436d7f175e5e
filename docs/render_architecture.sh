#!/usr/bin/env bash
# Render the Mermaid diagram in docs/architecture.md to docs/architecture.svg, with mermaid-cli from npm and
# Debian's Chromium (`python -m homeprice_assets_tests.prepare` installs it; no browser is downloaded).
# The SVG ends with the SHA-256 of the diagram's source: a test fails when the picture is stale.
#
#   bash docs/render_architecture.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
awk '/^```mermaid$/{f=1;next} /^```$/{f=0} f' "$here/architecture.md" > "$work/architecture.mmd"
echo '{"executablePath": "/usr/bin/chromium", "args": ["--no-sandbox", "--headless=new"]}' > "$work/puppeteer.json"
(cd "$work" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --silent --no-audit --no-fund @mermaid-js/mermaid-cli@12.2.0)
"$work/node_modules/.bin/mmdc" -q -i "$work/architecture.mmd" -o "$here/architecture.svg" -p "$work/puppeteer.json" -b white
printf '\n<!-- mermaid-source-sha256: %s -->\n' "$(sha256sum "$work/architecture.mmd" | cut -d' ' -f1)" >> "$here/architecture.svg"
echo "wrote $here/architecture.svg"
