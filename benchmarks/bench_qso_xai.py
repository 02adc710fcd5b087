"""XAI faithfulness benchmark for the qso_anomaly workload (prints one JSON object).

Trains a CI-size model on a small synthetic survey (or loads --model DIR), explains a stratified
sample of every injected class with Integrated Gradients (reconstruction baseline) and windowed
occlusion, and reports per-class localisation AUROC against the injection masks, deletion /
insertion AUCs vs a random order, and the weight-randomisation sanity check.

    python benchmarks/bench_qso_xai.py --n-train 1500 --epochs 12 --per-class 8
    python benchmarks/bench_qso_xai.py --model /path/to/trained --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="trained-model directory (skip training)")
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n", type=int, default=1200, help="benchmark spectra to draw")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--occlusion-window", type=int, default=16)
    p.add_argument("--framework", choices=["torch", "jax"], default="torch")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write xai_benchmark.json + explanations here")
    p.add_argument("--markdown", action="store_true", help="also print the per-class table")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from qso_anomaly.explain.benchmark import markdown_table, run_xai_benchmark
    from qso_anomaly.train import TrainedModel

    t0 = time.perf_counter()
    if args.model:
        trained = TrainedModel.load(args.model)
        train_s = 0.0
    else:
        from qso_anomaly.data.synth import generate
        from qso_anomaly.models.spec import ModelSpec
        from qso_anomaly.train import fit

        spec = ModelSpec.ci()
        grid = spec.input_grid()
        data = generate(args.n_train, 1, grid, anomaly_fraction=0.02)
        trained = fit(spec, grid, data, epochs=args.epochs, seed=0)
        train_s = time.perf_counter() - t0
    result = run_xai_benchmark(trained, n=args.n, seed=args.seed, per_class=args.per_class,
                               ig_steps=args.ig_steps, framework=args.framework,
                               occlusion_window=args.occlusion_window, out=args.out)
    result["train_seconds"] = train_s
    result["model"] = {"spec_version": trained.spec.version, "npix": trained.grid.npix,
                       "epochs": trained.metrics.get("epochs")}
    print(json.dumps(result, default=float))
    if args.markdown:
        print(markdown_table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
