"""Run-to-run stability of the workload (issue 12): the local stack's workload job, twice.

Runs ``python -m qso_anomaly.pipeline`` with the arguments ``skyrig up --stack local`` gives its
Ray job (Ray Train on 2 workers, Ray Data scoring, the stack's n_spectra and seed), twice, each
with its own fresh MLflow store so both train, then compares the two flagged sets (each run's
own per-stratum decision, re-read from its files) by TARGETID.
Prints one JSON object on stdout (the pipelines' logs go to stderr):
``{"runs": [{"wall_s", "n_scored", "n_flagged", "threshold"}, ...], "flagged_identical",
"flagged_symmetric_difference", "flagged_differ_fraction", "max_abs_score_diff"}``.

    python benchmarks/bench_qso_rerun.py [--n-spectra N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skyrig.config import load_stack
from skyrig.workflows.workload import entrypoint


def _run(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed (exit {proc.returncode}): {shlex.join(argv)}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # the run's own flag decision (per coverage stratum) re-read from its files
    from qso_anomaly.score.run import load_scored
    from qso_anomaly.train.trained import TrainedModel

    model = TrainedModel.load(out / "model" / "trained")
    scored = load_scored(sorted((out / "run" / "scores").glob("*.parquet")),
                         sorted((out / "data" / "survey").glob("*.parquet")),
                         model.reference_scores, summary["flag_threshold"],
                         calibration=model.flag_calibration())
    if int(np.sum(scored.flagged)) != summary["n_flagged"]:
        raise SystemExit(f"re-reading run {out} gives {int(np.sum(scored.flagged))} flags,"
                         f" the run reported {summary['n_flagged']}")
    return {"wall_s": round(wall, 1), "n_scored": summary["n_scored"],
            "n_flagged": summary["n_flagged"], "threshold": summary["flag_threshold"],
            "_scores": dict(zip(scored.targetid.tolist(), scored.score.tolist(), strict=True)),
            "_flagged": set(scored.targetid[scored.flagged].tolist())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-spectra", type=int, help="default: the local stack's n_spectra")
    ap.add_argument("--keep", type=Path, help="keep both run directories here")
    args = ap.parse_args()
    st = load_stack("local")
    base = args.keep or Path(tempfile.mkdtemp(prefix="qso-rerun-"))
    runs = []
    for i in (1, 2):
        out = base / f"run{i}"
        out.mkdir(parents=True, exist_ok=True)
        argv = shlex.split(entrypoint(st, out))
        argv[0] = sys.executable
        argv[argv.index("--tracking-uri") + 1] = f"sqlite:///{out / 'mlflow.db'}"
        if args.n_spectra:
            argv[argv.index("--n-spectra") + 1] = str(args.n_spectra)
        print(f"run {i}: {shlex.join(argv)}", file=sys.stderr)
        runs.append(_run(argv, out))
    a, b = runs[0]["_scores"], runs[1]["_scores"]
    fa, fb = runs[0]["_flagged"], runs[1]["_flagged"]
    diff = fa ^ fb
    result = {
        "stack": "local", "n_spectra": runs[0]["n_scored"],
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
        "flagged_identical": fa == fb,
        "flagged_symmetric_difference": len(diff),
        "flagged_differ_fraction": len(diff) / max(1, len(fa | fb)),
        "same_targetids": set(a) == set(b),
        "max_abs_score_diff": max(abs(a[t] - b[t]) for t in a) if set(a) == set(b) else None,
        "goal": "two identical runs flag the same spectra (or <= 10 % differ)",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
