"""Install what the tests need from outside PyPI (idempotent): Debian's headless Chromium and its driver for
the browser test, and Debian's Prometheus (server and promtool) for the observability test.

Run by `make test` before pytest, so a fresh machine (or CI) needs no step by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = {
    "chromium": "/usr/bin/chromium",
    "chromium-driver": "/usr/bin/chromedriver",
    "prometheus": "/usr/bin/prometheus",  # also /usr/bin/promtool
}


def missing() -> list[str]:
    return [pkg for pkg, path in PACKAGES.items() if not os.path.exists(path)]


def main() -> int:
    todo = missing()
    if not todo:
        return 0
    if shutil.which("apt-get") is None:
        print(
            f"prepare: cannot install {todo}: no apt-get on this machine; install them by your "
            f"system's means (the tests need {', '.join(PACKAGES.values())})",
            file=sys.stderr,
        )
        return 1
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"prepare: installing {' '.join(todo)} with apt-get ...", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo], check=True, env=env
    )
    return 0 if not missing() else 1


if __name__ == "__main__":
    sys.exit(main())
