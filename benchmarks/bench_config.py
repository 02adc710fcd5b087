"""Benchmark: validate + plan of the `prod` stack (issue target: under 1 s).

Prints one JSON line: cold (first call in a fresh process, imports excluded) and warm timings.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from skyrig.config import load_stack
from skyrig.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]


def once() -> float:
    t0 = time.perf_counter()
    build_plan(load_stack("prod", ROOT))
    return time.perf_counter() - t0


def main() -> None:
    cold = once()
    warm = [once() for _ in range(20)]
    print(
        json.dumps(
            {
                "benchmark": "validate_plan_prod",
                "cold_s": round(cold, 4),
                "warm_median_s": round(statistics.median(warm), 4),
                "warm_max_s": round(max(warm), 4),
                "target_s": 1.0,
                "meets_target": cold < 1.0 and max(warm) < 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
