"""Benchmark ``qso-inject-v1``: detection quality of the autoencoder (PyTorch and JAX scoring
of the same weights) against the PCA-χ² and PCA+IsolationForest baselines.

Protocol: a training survey (seed+1) and a test survey (seed), both with ``anomaly_fraction``
anomalies spread evenly over the classes; labels are never used for training (unsupervised,
contaminated training data, as on real data). A validation survey (seed+2) tracks the
autoencoder's overall AP after every epoch for the time-to-target-AP number.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from qso_anomaly import __version__
from qso_anomaly.baselines import PcaChi2, PcaIsolationForest
from qso_anomaly.bench.metrics import binary_metrics, detection_metrics, per_class_with_ci
from qso_anomaly.bench.robustness import robustness_table
from qso_anomaly.data.classes import ANOMALY_CLASSES, NORMAL
from qso_anomaly.data.synth import GENERATOR_VERSION, generate
from qso_anomaly.data.templates import template_hashes
from qso_anomaly.data.validate import clean_batch, clean_rows
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.jax_model import score_jax
from qso_anomaly.models.scoring import score_torch, trough_torch
from qso_anomaly.models.shape import ShapeModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.train import fit

BENCHMARK = "qso-inject-v1"
DEFAULT_SEED = 20261127


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _epoch_evaluator(
    train_sub: Any, val: Any, target_ap: float | None, progress: Callable[[str], None]
) -> Callable[[Any, int], dict]:
    """Overall AP on the validation survey after an epoch (density refitted on a subset)."""

    val_pos = np.asarray(val.label) != NORMAL
    shape: ShapeModel | None = None

    def evaluate(model: Any, epoch: int) -> dict[str, Any]:
        nonlocal shape
        model.eval()
        with torch.no_grad():
            lat = model.encode(torch.from_numpy(train_sub.flux), torch.from_numpy(train_sub.ivar),
                               torch.from_numpy(train_sub.z)).numpy()
        dens = DensityModel.fit(lat, model.spec.density_components, 0)
        grid_wave = model.buffer("wave").numpy().astype(np.float64)
        if model.spec.shape_weight:
            if shape is None:
                shape = ShapeModel.fit(train_sub.flux, train_sub.ivar, train_sub.z, grid_wave)
            dens.shape = shape
        model.set_density(dens)
        normal = train_sub.take(slice(0, min(len(train_sub), 500)))
        r = score_torch(model, normal)
        dens.calibrate(r.chi2_dof, r.density_nll,
                       None if dens.shape is None
                       else dens.shape.zscore(normal.flux, normal.ivar, normal.z, grid_wave),
                       trough_torch(model, normal) if model.spec.trough_weight else None)
        model.set_density(dens)
        res = score_torch(model, val)
        ap = binary_metrics(res.score, val_pos)["ap"]
        progress(f"epoch {epoch}: validation AP {ap:.3f} (target {target_ap})")
        return {"val_ap": ap, "reached_target": bool(target_ap is not None and ap >= target_ap)}

    return evaluate


def run_detection(
    *,
    n_test: int = 20_000,
    n_train: int = 12_000,
    n_val: int = 3_000,
    epochs: int = 8,
    seed: int = DEFAULT_SEED,
    anomaly_fraction: float = 0.1,
    spec: ModelSpec | None = None,
    progress: Callable[[str], None] = _progress,
) -> dict[str, Any]:
    spec = spec or ModelSpec.ci()
    grid = spec.input_grid()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    raw_test = generate(n_test, seed, grid, anomaly_fraction, signal=True)
    _, reasons, _ = clean_rows(raw_test)
    keep = reasons == ""
    test, _ = clean_batch(raw_test)
    signal_chi2 = np.asarray(raw_test.meta["signal_chi2"])[keep]  # generate(signal=True)
    train = generate(n_train, seed + 1, grid, anomaly_fraction)
    val, _ = clean_batch(generate(n_val, seed + 2, grid, anomaly_fraction))
    t_gen = time.perf_counter() - t0
    progress(f"generated test={len(test)} train={len(train)} val={len(val)} in {t_gen:.0f}s")

    timings: dict[str, float] = {"generate": t_gen}
    t = time.perf_counter()
    b0 = PcaChi2().fit(train)
    b1 = PcaIsolationForest().fit(train)
    timings["baselines_fit"] = time.perf_counter() - t
    t = time.perf_counter()
    scores: dict[str, np.ndarray] = {"pca_chi2": b0.score(test), "pca_iforest": b1.score(test)}
    timings["baselines_score"] = time.perf_counter() - t
    val_pos = np.asarray(val.label) != NORMAL
    target_ap = max(binary_metrics(b.score(val), val_pos)["ap"] for b in (b0, b1))
    t_base = timings["baselines_fit"] + timings["baselines_score"]
    progress(f"baselines fitted+scored in {t_base:.0f}s;"
             f" target AP (best baseline, validation) = {target_ap:.3f}")

    train_sub = train.take(slice(0, min(1000, len(train))))
    t = time.perf_counter()
    tm = fit(spec, grid, train, epochs=epochs, seed=seed,
             on_epoch=lambda e, loss: progress(f"epoch {e} loss {loss:.4f}"),
             epoch_eval=_epoch_evaluator(train_sub, val, target_ap, progress))
    timings["ae_fit_total"] = time.perf_counter() - t
    timings["ae_train"] = float(tm.metrics["train_seconds"])
    evals = tm.metrics.get("epoch_eval", [])
    reached = [e for e in evals if e["reached_target"]]

    model = tm.torch_model()
    t = time.perf_counter()
    rt = score_torch(model, test)
    timings["score_torch"] = time.perf_counter() - t
    params = tm.jax_params()
    t = time.perf_counter()
    rj = score_jax(params, spec, grid, test)
    timings["score_jax"] = time.perf_counter() - t
    scores["ae_torch"] = rt.score
    scores["ae_jax"] = rj.score
    scores["ae_torch_chi2_only"] = np.log(rt.chi2_dof)
    scores["ae_torch_density_only"] = rt.density_nll
    progress(f"scored: torch {timings['score_torch']:.0f}s jax {timings['score_jax']:.0f}s")

    labels = np.asarray(test.label)
    metrics = {k: detection_metrics(v, labels, test.snr, test.z) for k, v in scores.items()}
    t = time.perf_counter()
    with_ci = {k: per_class_with_ci(scores[k], labels, seed=seed)
               for k in ("ae_torch", "pca_chi2", "pca_iforest")}
    timings["bootstrap"] = time.perf_counter() - t
    detect = detectability(signal_chi2, labels)
    acceptance = {}
    for cls in ANOMALY_CLASSES:
        rows: dict[str, dict[str, Any]] = {k: with_ci[k][cls] for k in with_ci
                                           if cls in with_ci[k]}
        if "ae_torch" not in rows:
            continue
        ae = rows["ae_torch"]["ap"]
        base = [rows[b]["ap"] if b in rows else None for b in ("pca_chi2", "pca_iforest")]
        any_method = any(r is not None and r["above_chance"] for r in rows.values())
        beats = bool(ae is not None and all(b is not None and ae >= b for b in base))
        acceptance[cls] = {
            "ae_ap": ae, "pca_chi2_ap": base[0], "pca_iforest_ap": base[1],
            "beats_both": beats,
            "above_chance": rows["ae_torch"]["above_chance"],
            "detected_by_any_method": any_method,
            "goal_met": bool(beats or not any_method),
            "median_signal_chi2": detect.get(cls, {}).get("median_signal_chi2"),
        }
    t = time.perf_counter()
    normals = test.take(labels == NORMAL)
    robustness = robustness_table(model, tm.flag_calibration(), normals, grid.wave, seed=seed,
                                  pooled=tm.reference_scores)
    timings["robustness"] = time.perf_counter() - t
    return {
        "benchmark": BENCHMARK,
        "generator": GENERATOR_VERSION,
        "qso_anomaly_version": __version__,
        "seed": seed,
        "n_test": len(test),
        "n_train": len(train),
        "n_val": len(val),
        "anomaly_fraction": anomaly_fraction,
        "class_counts": {c: int((labels == c).sum()) for c in sorted(set(labels.tolist()))},
        "grid": grid.to_dict(),
        "spec": spec.to_dict(),
        "epochs": epochs,
        "templates_sha256": template_hashes(),
        "timings_s": timings,
        "parity_max_abs_score_diff": float(np.max(np.abs(rt.score - rj.score))),
        "loss_history": tm.metrics["loss_history"],
        "epoch_eval": evals,
        "target_ap": target_ap,
        "time_to_target_ap_s": reached[0]["train_seconds"] if reached else None,
        "metrics": metrics,
        "per_class_ci": with_ci,
        "detectability": detect,
        "robustness": robustness,
        "calibration": tm.metrics.get("calibration"),
        "acceptance": acceptance,
        "acceptance_all_classes": all(a["goal_met"] for a in acceptance.values()),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
    }


#: Δχ² of the injected signal below which even a matched filter that knows the signal's exact
#: shape sees it at < 3σ: such a spectrum cannot be detected by any method at its S/N.
UNDETECTABLE_CHI2 = 9.0


def detectability(signal_chi2: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per class: quantiles of the injected signal's χ² against the noise (DR1 S/N) and the
    share of spectra whose signal is below :data:`UNDETECTABLE_CHI2`."""
    out: dict[str, dict[str, Any]] = {}
    labels = np.asarray(labels).astype(str)
    for cls in sorted(set(labels.tolist()) - {NORMAL}):
        v = np.asarray(signal_chi2)[labels == cls]
        q10, q50, q90 = np.quantile(v, [0.1, 0.5, 0.9])
        out[cls] = {"n": int(v.size), "median_signal_chi2": float(q50),
                    "p10_signal_chi2": float(q10), "p90_signal_chi2": float(q90),
                    "share_undetectable": float(np.mean(v < UNDETECTABLE_CHI2))}
    return out


def markdown_issue12(result: dict[str, Any]) -> str:
    """Per-class AP/AUROC with 95 % bootstrap CIs vs both baselines, detectability, and the
    robustness table (markdown)."""
    ci = result["per_class_ci"]
    det = result["detectability"]

    def ap(row: dict[str, Any] | None, key: str = "ap") -> str:
        if row is None or row[key] is None:
            return "—"
        lo, hi = row[f"{key}_ci"]
        return f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    out = [(f"### Per class: AP and AUROC with 95 % bootstrap CIs (N={result['n_test']}, "
           f"seed {result['seed']}, {result['epochs']} epochs)"), "",
           ("| class | n | chance AP | AE AP | PCA χ² AP | PCA+IForest AP | AE AUROC | "
           "PCA χ² AUROC | IForest AUROC | median signal χ² | any method above chance | "
           "AE beats both | goal met |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cls, a in result["acceptance"].items():
        r = {k: ci[k].get(cls) for k in ci}
        out.append(
            f"| {cls} | {r['ae_torch']['n_pos']} | {r['ae_torch']['chance_ap']:.3f} | "
            f"{ap(r['ae_torch'])} | {ap(r['pca_chi2'])} | {ap(r['pca_iforest'])} | "
            f"{ap(r['ae_torch'], 'auroc')} | {ap(r['pca_chi2'], 'auroc')} | "
            f"{ap(r['pca_iforest'], 'auroc')} | {det[cls]['median_signal_chi2']:.0f} | "
            f"{'yes' if a['detected_by_any_method'] else 'no'} | "
            f"{'yes' if a['beats_both'] else '**no**'} | "
            f"{'yes' if a['goal_met'] else '**no**'} |")
    out += ["", ("### Robustness: flag rate of normal quasars (conformal p ≤ 0.01 within the "
                 "coverage stratum; pooled = one calibration set)"), "",
            ("| variant | n | flag rate | ratio to unmasked | pooled flag rate | median score | "
             "within 2x |"),
            "|---|---|---|---|---|---|---|"]
    for name, row in result["robustness"].items():
        ratio = "—" if row["ratio_to_unmasked"] is None else f"{row['ratio_to_unmasked']:.2f}"
        pooled = row.get("pooled_flag_rate")
        out.append(f"| {name} | {row['n']} | {row['flag_rate']:.4f} | {ratio} | "
                   f"{'—' if pooled is None else f'{pooled:.4f}'} | "
                   f"{row['median_score']:.2f} | {'yes' if row['within_2x'] else '**no**'} |")
    cal = result.get("calibration") or {}
    if cal:
        out += ["", (f"Flag threshold of unmasked spectra (pooled conformal, α = {cal['alpha']}, "
                f"n = {cal['n_calibration']} held-out normals): {cal['threshold']:.2f}, "
                f"bootstrap 95 % CI {cal['threshold_ci_low']:.2f}–"
                f"{cal['threshold_ci_high']:.2f}.")]
        if cal.get("strata"):
            out += ["", (f"Per coverage stratum ({cal.get('method')}, n_min = "
                         f"{cal.get('n_min')}; held-out normals clean and under "
                         f"{len(cal.get('copies', [])) - 1} masking copies):"), "",
                    "| stratum | n | decided at | n used | threshold |", "|---|---|---|---|---|"]
            out += [f"| {r['name']} | {r['n']} | {r['level']} | {r['n_used']} | "
                    f"{r['threshold']:.2f} |" for r in cal["strata"]]
    t = result["timings_s"]
    out += ["", (f"Training time (autoencoder, {result['n_train']} spectra, {result['epochs']} "
            f"epochs): {t['ae_train']:.0f} s; fit incl. density and calibration "
            f"{t['ae_fit_total']:.0f} s.")]
    return "\n".join(out)


def markdown_tables(result: dict[str, Any]) -> str:
    """Per-class and per-S/N AP tables plus the full metric set for the AE (markdown)."""
    models = ["ae_torch", "ae_jax", "pca_chi2", "pca_iforest"]
    m = result["metrics"]
    out = [(f"### {result['benchmark']}: average precision per class "
           f"(N={result['n_test']}, seed {result['seed']})"), "",
           "| class | n | chance | AE (torch) | AE (JAX) | PCA χ² | PCA+IForest | AE beats both |",
           "|---|---|---|---|---|---|---|---|"]

    def f(x: Any) -> str:
        return "—" if x is None else f"{x:.3f}"

    rows = ["overall", *sorted(m["ae_torch"]["per_class"])]
    for r in rows:
        cells = [(m[k]["overall"] if r == "overall" else m[k]["per_class"][r]) for k in models]
        beats = r != "overall" and result["acceptance"][r]["beats_both"]
        ok = "" if r == "overall" else ("yes" if beats else "**no**")
        out.append(f"| {r} | {cells[0]['n_pos']} | {f(cells[0]['chance_ap'])} | "
                   + " | ".join(f(c["ap"]) for c in cells) + f" | {ok} |")
    out += ["", "### AUROC / precision@100 / recall@1% per class", "",
            ("| class | AE AUROC | AE P@100 | AE R@1% | PCA χ² AUROC | PCA χ² P@100 | "
            "PCA χ² R@1% | IForest AUROC | IForest P@100 | IForest R@1% |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [(m[k]["overall"] if r == "overall" else m[k]["per_class"][r])
                 for k in ("ae_torch", "pca_chi2", "pca_iforest")]
        out.append(f"| {r} | " + " | ".join(
            f"{f(c['auroc'])} | {f(c['precision_at_100'])} | {f(c['recall_at_1pct'])}"
            for c in cells) + " |")
    out += ["", "### Average precision per S/N bin (all anomalies vs normal)", "",
            "| S/N per 0.8 Å px | n anomalies | AE (torch) | AE (JAX) | PCA χ² | PCA+IForest |",
            "|---|---|---|---|---|---|"]
    for b in m["ae_torch"]["per_snr"]:
        cells = [m[k]["per_snr"][b] for k in models]
        out.append(f"| {b} | {cells[0]['n_pos']} | " + " | ".join(f(c["ap"]) for c in cells)
                   + " |")
    out += ["", "### Average precision per redshift bin", "",
            "| z | n anomalies | AE (torch) | PCA χ² | PCA+IForest |", "|---|---|---|---|---|"]
    for b in m["ae_torch"]["per_z"]:
        cells = [m[k]["per_z"][b] for k in ("ae_torch", "pca_chi2", "pca_iforest")]
        out.append(f"| {b} | {cells[0]['n_pos']} | " + " | ".join(f(c["ap"]) for c in cells)
                   + " |")
    return "\n".join(out)
