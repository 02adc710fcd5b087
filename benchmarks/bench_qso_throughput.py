#!/usr/bin/env python3
"""Scoring throughput of the qso_anomaly workload, side by side in one run: PyTorch vs JAX,
plain loop vs Ray Data, end to end over Parquet shards; model-only reference; peak RSS at two
survey sizes; a kill-at-half resume check; the projected time for 1.6 M DR1 spectra.

Prints exactly one JSON object on stdout (``bench | jq`` works): file descriptor 1 is pointed
at stderr for the whole run — Ray, its workers and every library log there — and the result is
written to the saved original stdout at the end. --markdown writes the docs/benchmarks.md table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-spectra", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--model-dir", type=Path, help="a saved TrainedModel (else a quick one)")
    ap.add_argument("--work-dir", type=Path, help="kept between runs (shards are reused)")
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--rss-small", type=int, help="also measure peak RSS at this many spectra")
    ap.add_argument("--no-resume", action="store_true", help="skip the kill-at-half check")
    ap.add_argument("--plain-rounds", type=int, default=1,
                    help="2: plain loops again in reverse order (torch, jax, jax, torch); the "
                         "JAX/PyTorch ratio then comes from the summed times")
    ap.add_argument("--paired-groups", type=int, default=20,
                    help="shard groups of the paired run (plain loop and model only "
                         "interleaved in one process); 0 skips it")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    result_fd = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)  # everything (Python, C extensions, child processes) now goes to stderr
    sys.stdout = sys.stderr
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # before torch is imported here, in the children and in Ray's workers (passive OpenMP
    # threads: see qso_anomaly.score.config.THREAD_ENV)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from qso_anomaly.bench.throughput import markdown_table, run_throughput

        res = run_throughput(n_spectra=args.n_spectra, shard_size=args.shard_size,
                             batch_size=args.batch_size, model_dir=args.model_dir,
                             frameworks=tuple(args.frameworks.split(",")),
                             use_ray=not args.no_ray, rss_small=args.rss_small,
                             resume=not args.no_resume, work_dir=args.work_dir,
                             plain_rounds=args.plain_rounds,
                             paired_groups=args.paired_groups)
        if args.markdown:
            args.markdown.write_text(markdown_table(res) + "\n")
    finally:
        sys.stdout.flush()
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(res, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
