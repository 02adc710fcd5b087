"""Benchmark: render + validate of the `prod` Kubernetes platform (issue 9 target: under 2 s).

Cold: the first build_kube + write + validate in a fresh process (imports excluded, vendored
CRDs and schemas loaded on first use); warm: median/max of 10 more. Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from skyrig.config import load_stack
from skyrig.kube import build_kube
from skyrig.kube.validate import problems
from skyrig.workflows.kube_render import write_kube_plan

ROOT = Path(__file__).resolve().parents[1]


def once(out: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    kp = build_kube(load_stack("prod", ROOT))
    files = write_kube_plan(kp, out)
    found = problems(kp.objects(), kp.k8s_version, kp.kuberay_version)
    return time.perf_counter() - t0, len(kp.objects()), len(files) + 100 * len(found)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold, n_objects, n_files = once(Path(tmp))
        warm = [once(Path(tmp))[0] for _ in range(10)]
    print(f"prod: {n_objects} objects, cold {cold:.2f} s", file=sys.stderr)
    print(json.dumps({
        "benchmark": "kube_render_validate_prod",
        "objects": n_objects,
        "files": n_files,
        "cold_s": round(cold, 3),
        "warm_median_s": round(statistics.median(warm), 3),
        "warm_max_s": round(max(warm), 3),
        "target_s": 2.0,
        "met": cold < 2.0,
    }))


if __name__ == "__main__":
    main()
