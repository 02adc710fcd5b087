#!/usr/bin/env bash
# GPU check for the qso_anomaly scoring path. One command, a few minutes, no network.
#
#   benchmarks/gpu_check.sh [--quick] > gpu_check.json
#
# Checks that CUDA is visible to PyTorch and to JAX, compares their scores on the GPU (and
# reduced precisions against float32) with the parity tolerance of tests/test_models_parity.py,
# measures model scoring throughput and peak GPU memory at several batch sizes for the CI model
# and the full-size model (7,781-px grid), runs the streamed plain loop end to end over
# synthetic Parquet shards on the GPU, and derives an RTX A4000 projection from the measured
# device's memory-bandwidth and FP32-FLOP ratios (stated as a projection).
#
# Prints exactly one JSON object on stdout; progress goes to stderr. Exit 0 when the check ran
# (even if CUDA is missing: then "cuda_torch": false and no throughput rows), 1 on a crash.
# Needs: the project venv (.venv) or a Python with torch (CUDA build), jax[cuda], flax,
# pyarrow and the qso_anomaly package importable (PYTHONPATH is set to the workload source).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/workloads/qso_anomaly/src${PYTHONPATH:+:$PYTHONPATH}"
# torch and JAX share the card: JAX must not preallocate 75 % of it
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# host-side threads (validation, CPU reference) must not spin on a shared machine
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export TF_CPP_MIN_LOG_LEVEL=2
# --dry-run-cpu: the same flow on the CPU with the CI model and tiny sizes, to check the
# script itself on a machine without a GPU (figures meaningless)
QUICK=0
DRY=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --dry-run-cpu) DRY=1; QUICK=1 ;;
    *) echo "usage: $0 [--quick] [--dry-run-cpu]" >&2; exit 2 ;;
  esac
done
export QSO_GPU_CHECK_QUICK=$QUICK QSO_GPU_CHECK_DRY=$DRY

exec "$PY" - <<'PYEOF'
import json
import os
import platform
import sys
import tempfile
import time
import traceback

result_fd = os.dup(1)
os.dup2(2, 1)  # libraries print to stdout; only the final JSON goes there
sys.stdout = sys.stderr
QUICK = os.environ.get("QSO_GPU_CHECK_QUICK") == "1"
DRY = os.environ.get("QSO_GPU_CHECK_DRY") == "1"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# Peak figures from vendor datasheets: (memory bandwidth GB/s, dense FP32 TFLOP/s).
DEVICES = {
    "RTX A4000": (448.0, 19.2),
    "H200": (4800.0, 67.0),      # H200 SXM
    "H100 80GB HBM3": (3350.0, 67.0),  # H100 SXM
    "H100 PCIe": (2000.0, 51.0),
    "A100-SXM4-80GB": (2039.0, 19.5),
    "A100-SXM4-40GB": (1555.0, 19.5),
    "A100-PCIE-40GB": (1555.0, 19.5),
    "A100 80GB PCIe": (1935.0, 19.5),
    "L40S": (864.0, 91.6),
    "L4": (300.0, 30.3),
    "A10": (600.0, 31.2),
    "RTX A6000": (768.0, 38.7),
    "RTX 4090": (1008.0, 82.6),
    "T4": (320.0, 8.1),
    "V100": (900.0, 15.7),
}
A4000 = DEVICES["RTX A4000"]
DR1 = 1_600_000


def lookup(name):
    best = None
    for key, val in DEVICES.items():
        if key.lower() in name.lower() and (best is None or len(key) > len(best[0])):
            best = (key, val)
    return best


out = {"check": "qso-gpu-check-v1", "platform": platform.platform(), "quick": QUICK,
       "dry_run_cpu": DRY,
       "python": sys.version.split()[0]}
try:
    import numpy as np
    import torch

    out["torch"] = torch.__version__
    out["cuda_torch"] = bool(torch.cuda.is_available())
    if out["cuda_torch"]:
        p = torch.cuda.get_device_properties(0)
        out["device"] = {"name": p.name, "memory_gib": p.total_memory / 1024**3,
                         "capability": f"{p.major}.{p.minor}",
                         "multiprocessors": p.multi_processor_count,
                         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    try:
        import jax

        out["jax"] = jax.__version__
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        out["cuda_jax"] = bool(gpus)
        out["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        out["cuda_jax"] = False
        out["jax_error"] = repr(exc)
    log(f"torch CUDA: {out['cuda_torch']}, JAX GPU: {out.get('cuda_jax')}")

    from qso_anomaly.data.synth import generate, write_survey
    from qso_anomaly.models.density import DensityModel
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.models.torch_model import build_model
    from qso_anomaly.score import score_shards
    from qso_anomaly.score.config import ScoringConfig, gpu_batch_size
    from qso_anomaly.score.scorer import Scorer
    from qso_anomaly.train.trained import TrainedModel

    def trained(spec):
        grid = spec.input_grid()
        torch.manual_seed(0)
        m = build_model(spec, grid)
        return TrainedModel(spec, grid, {k: v.detach().clone() for k, v in
                                         m.state_dict().items()},
                            DensityModel.standard_normal(spec.latent_dim))

    TOL = {"score_atol": 1e-3, "chi2_rtol": 1e-4, "nll_atol": 1e-3}

    def compare(a, b):
        d = {"score_max_abs": float(np.max(np.abs(a.score - b.score))),
             "chi2_max_rel": float(np.max(np.abs(a.chi2_dof - b.chi2_dof)
                                          / np.maximum(np.abs(b.chi2_dof), 1e-12))),
             "nll_max_abs": float(np.max(np.abs(a.density_nll - b.density_nll)))}
        d["within_tolerance"] = bool(d["score_max_abs"] <= TOL["score_atol"]
                                     and d["chi2_max_rel"] <= TOL["chi2_rtol"]
                                     and d["nll_max_abs"] <= TOL["nll_atol"])
        return d

    def rate(scorer, batch, repeats):
        scorer.score_batch(batch.take(slice(0, scorer.config.batch_size)))  # warm-up / JIT
        if scorer.framework == "torch" and scorer.config.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(repeats):
            scorer.score_batch(batch)
        dt = time.perf_counter() - t
        row = {"spectra_per_s": repeats * len(batch) / dt}
        if scorer.framework == "torch" and scorer.config.device == "cuda":
            row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 1024**2
        return row

    cpu_cfg = ScoringConfig(batch_size=256)
    DEV = "cuda" if out["cuda_torch"] else ("cpu" if DRY else None)
    jax_ok = bool(out.get("cuda_jax")) or (DRY and "jax" in out)
    if DEV is not None:
        models = ({"ci": ModelSpec.ci()} if DRY
                  else {"ci": ModelSpec.ci(), "full": ModelSpec.full()})
        out["models"] = {}
        for label, spec in models.items():
            tm = trained(spec)
            npix = tm.grid.npix
            suggested = gpu_batch_size(spec.channels, spec.pool, npix, spec.n_rest)
            n = 256 if DRY else (2048 if QUICK else 8192)
            batch = generate(n, 11, tm.grid)
            log(f"{label}: {npix} px, suggested A4000 batch {suggested}")
            entry = {"npix": npix, "suggested_a4000_batch": suggested, "parity": {},
                     "throughput": []}
            ref = Scorer(tm, config=cpu_cfg.with_(framework="torch")).score_batch(
                batch.take(slice(0, 256)))
            gpu = ScoringConfig(device=DEV, batch_size=256)
            t32 = Scorer(tm, config=gpu.with_(framework="torch")).score_batch(
                batch.take(slice(0, 256)))
            entry["parity"]["torch_cuda_fp32_vs_cpu"] = compare(t32, ref)
            for prec in ("tf32", "bfloat16"):
                r = Scorer(tm, config=gpu.with_(framework="torch", precision=prec)).score_batch(
                    batch.take(slice(0, 256)))
                entry["parity"][f"torch_cuda_{prec}_vs_fp32"] = compare(r, t32)
            if jax_ok:
                j = Scorer(tm, config=gpu.with_(framework="jax")).score_batch(
                    batch.take(slice(0, 256)))
                entry["parity"]["jax_gpu_vs_torch_cuda_fp32"] = compare(j, t32)
            sizes = sorted({64, 128} if DRY else {64, 256, 1024, suggested} if QUICK
                           else {64, 128, 256, 512, 1024, 2048, suggested})
            for fw in ("torch", "jax"):
                if fw == "jax" and not jax_ok:
                    continue
                for bs in sizes:
                    for prec in (("float32", "tf32") if fw == "torch" else ("float32",)):
                        try:
                            sc = Scorer(tm, config=ScoringConfig(
                                device=DEV, framework=fw, batch_size=bs, precision=prec))
                            row = rate(sc, batch, 1 if QUICK else 3)
                        except Exception as exc:  # noqa: BLE001 - e.g. out of memory
                            row = {"error": repr(exc)[:300]}
                        row.update(framework=fw, batch_size=bs, precision=prec)
                        entry["throughput"].append(row)
                        log(f"{label} {fw} {prec} batch {bs}: {row}")
                        if fw == "torch" and DEV == "cuda":
                            torch.cuda.empty_cache()
            out["models"][label] = entry

        # end to end (streamed plain loop, full model, synthetic shards on local disk)
        e2e_label = "ci" if DRY else "full"
        tm = trained(ModelSpec.ci() if DRY else ModelSpec.full())
        n_e2e = 500 if DRY else (4000 if QUICK else 16000)
        work = tempfile.mkdtemp(prefix="qso-gpu-check-")
        t = time.perf_counter()
        shards = write_survey(f"{work}/shards", n=n_e2e, seed=3, shard_size=2000, grid=tm.grid)
        log(f"wrote {n_e2e} full-grid spectra in {time.perf_counter() - t:.0f}s")
        bs = min(out["models"][e2e_label]["suggested_a4000_batch"], 256 if DRY else 8192)
        out[f"e2e_{e2e_label}_model"] = {}
        for fw in ("torch", "jax"):
            if fw == "jax" and not jax_ok:
                continue
            cfg = ScoringConfig(device=DEV, framework=fw, batch_size=bs)
            score_shards(tm, shards[:1], f"{work}/warm-{fw}", config=cfg)
            s = score_shards(tm, shards, f"{work}/out-{fw}", config=cfg)
            out[f"e2e_{e2e_label}_model"][fw] = {"n": s.n_scored, "seconds": s.elapsed,
                                         "spectra_per_s": s.spectra_per_second,
                                         "batch_size": bs,
                                         "projected_dr1_minutes_here":
                                             DR1 / s.spectra_per_second / 60}
            log(f"e2e {fw}: {out['e2e_' + e2e_label + '_model'][fw]}")

        # A4000 projection from the measured device
        found = lookup(out["device"]["name"]) if "device" in out else None
        full = [r for r in out["models"][e2e_label]["throughput"]
                if r.get("framework") == "torch" and r.get("precision") == "float32"
                and "spectra_per_s" in r]
        if found and full:
            best = max(full, key=lambda r: r["spectra_per_s"])
            bw, fl = found[1]
            ratio_bw, ratio_fl = A4000[0] / bw, A4000[1] / fl
            proj = best["spectra_per_s"] * min(ratio_bw, ratio_fl)
            out["a4000_projection"] = {
                "basis": f"{found[0]}: {bw} GB/s, {fl} TFLOP/s FP32 vs RTX A4000 448 GB/s, "
                         "19.2 TFLOP/s (datasheets); model-only rate × the smaller ratio",
                "measured_model_only_spectra_per_s": best["spectra_per_s"],
                "measured_batch_size": best["batch_size"],
                "bandwidth_ratio": ratio_bw, "flop_ratio": ratio_fl,
                "projected_model_only_spectra_per_s": proj,
                "projected_dr1_minutes_model_only": DR1 / proj / 60,
                "is_projection": True,
            }
        elif "device" in out:
            out["a4000_projection"] = {"error": f"no datasheet figures for "
                                                f"{out['device']['name']!r}; add it to DEVICES"}
    out["ok"] = True
except Exception:  # noqa: BLE001 - the JSON says what broke
    out["ok"] = False
    out["error"] = traceback.format_exc()[-3000:]

with os.fdopen(result_fd, "w") as f:
    f.write(json.dumps(out, default=float) + "\n")
sys.exit(0 if out["ok"] else 1)
PYEOF
