"""Run every benchmark under bench/ in turn (`make bench`); each prints its own table."""

import subprocess
import sys
from pathlib import Path

# scale_bench.py last: its 5M-sale run takes the longest (and up to ~16 GiB)
BENCHES = [
    "lifecycle_bench.py",
    "serving_bench.py",
    "drift_calibration.py",
    "daemon_bench.py",
    "scale_bench.py",
]

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        subprocess.run([sys.executable, str(here / name)], check=True)
