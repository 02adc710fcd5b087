#!/usr/bin/env python3
"""Scoring throughput of the qso_anomaly workload: PyTorch vs JAX, plain loop vs Ray Data
(actor pool), end to end over Parquet shards, and the projected time for 1.6 M DR1 spectra.

Prints one JSON object on stdout; --markdown writes the table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-spectra", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=2, help="Ray Data actors")
    ap.add_argument("--model-dir", type=Path, help="a saved TrainedModel (else a quick one)")
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    from qso_anomaly.bench.throughput import markdown_table, run_throughput

    res = run_throughput(n_spectra=args.n_spectra, shard_size=args.shard_size,
                         batch_size=args.batch_size, model_dir=args.model_dir,
                         frameworks=tuple(args.frameworks.split(",")),
                         ray_concurrency=args.concurrency, work_dir=args.work_dir,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.markdown:
        args.markdown.write_text(markdown_table(res) + "\n")
    print(json.dumps(res, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
