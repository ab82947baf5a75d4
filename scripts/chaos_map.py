"""Run the mapping job's fault-tolerance scenarios (tests/faults/test_mapping_faults.py) by name.

Usage:
    .venv/bin/python scripts/chaos_map.py                 # every scenario, slow ones included
    .venv/bin/python scripts/chaos_map.py actor s3        # a subset
    .venv/bin/python scripts/chaos_map.py --list

Each scenario is a pytest test that compares the faulted run with one uninterrupted run of the
same 1 x 4 chip strip (shared within one invocation), so running several at once costs one
reference run. Exit code: pytest's (0 = every chosen scenario held).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "faults" / "test_mapping_faults.py"
SCENARIOS = {
    "actor": "test_lssr_actor_killed_mid_run",
    "lock": "test_second_run_on_a_locked_store_refuses",
    "s3": "test_output_s3_server_stopped_mid_run",
    "nodata": "test_nodata_chip_is_a_recorded_skip_and_nothing_else_changes",
}
"""Scenario name -> test function."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", help=f"scenarios to run (default all): {', '.join(SCENARIOS)}")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    a = ap.parse_args(argv)
    if a.list:
        for name, test in SCENARIOS.items():
            print(f"{name:8s} {test}")
        return 0
    chosen = a.scenarios or list(SCENARIOS)
    unknown = [c for c in chosen if c not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    cmd = [sys.executable, "-m", "pytest", str(TESTS), "-q", "-rA", "--durations=0", "-m", "slow or not slow",
           "-k", " or ".join(SCENARIOS[c] for c in chosen)]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
