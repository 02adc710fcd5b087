#!/usr/bin/env python3
"""Study for issue 12: which function of the trained autoencoder alone scores best per class.

Trains the CI-size autoencoder exactly as ``benchmarks/bench_qso_detection.py`` does (same
surveys, seeds, ``fit``, baselines; at the default sizes it reproduces that benchmark's AE and
baseline APs), then compares candidate scores built only from the trained model's outputs on
the VALIDATION survey and reports the chosen one on the TEST survey:

* chi2/density weights of the current score;
* the density term from other latent Gaussian mixtures: K components, fitted on clean latents
  only or on clean + augmented ones (as ``fit`` does), and trimmed-likelihood refits that drop
  the least likely share of the (unlabelled, contaminated) training latents;
* an IsolationForest on the training latents as the density term (Liu et al. 2008);
* a localised χ² term: the max over half-overlapping wavelength windows (≥ half valid pixels)
  of the windowed χ²/dof, a scan statistic, added to the global one.

Every term is robustly standardised (median, IQR/1.349) on the fit's held-out normals, as the
model's own score is. Selection: among candidates whose validation overall AP is at least the
current score's, the most classes where the candidate's AP ≥ both baselines' APs, then the
highest validation overall AP. About 15 min on 2 shared CPU cores at the default sizes (the
latent-density fits dominate after training). Prints one JSON object (per-class AP of the
current score, the family winners, the chosen candidate and both baselines, on validation and
test).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def window_max_chi2(pix: np.ndarray, good: np.ndarray, width: int) -> np.ndarray:
    """Max over windows (stride width/2, ≥ width/2 valid px) of Σ χ²_pix / n_valid, (N,)."""
    n, p = pix.shape
    cs = np.concatenate([np.zeros((n, 1)), np.cumsum(pix, 1)], 1)
    cg = np.concatenate([np.zeros((n, 1)), np.cumsum(good, 1)], 1)
    starts = np.arange(0, p - width + 1, width // 2)
    s, g = cs[:, starts + width] - cs[:, starts], cg[:, starts + width] - cg[:, starts]
    return np.maximum(np.where(g >= width / 2, s / np.maximum(g, 1), 0.0).max(1), 1e-6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-test", type=int, default=6_000)
    ap.add_argument("--n-train", type=int, default=4_000)
    ap.add_argument("--n-val", type=int, default=3_000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=20261127, help="data seed (as the benchmark)")
    ap.add_argument("--fit-seed", type=int, default=None, help="training seed (default: --seed)")
    args = ap.parse_args(argv)

    import torch
    from sklearn.ensemble import IsolationForest

    from qso_anomaly.baselines import PcaChi2, PcaIsolationForest
    from qso_anomaly.bench.metrics import detection_metrics
    from qso_anomaly.data.classes import NORMAL
    from qso_anomaly.data.synth import generate
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.models.density import (
        DensityModel,
        _robust,  # the model's own standardisation
    )
    from qso_anomaly.models.scoring import score_torch
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.train import fit
    from qso_anomaly.train.augment import augment_masks
    from qso_anomaly.train.fitting import load_training_data

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    seed = args.seed
    fseed = seed if args.fit_seed is None else args.fit_seed
    spec = ModelSpec.ci()
    grid = spec.input_grid()
    test, _ = clean_batch(generate(args.n_test, seed, grid, 0.1))
    train = generate(args.n_train, seed + 1, grid, 0.1)
    val, _ = clean_batch(generate(args.n_val, seed + 2, grid, 0.1))
    b0, b1 = PcaChi2().fit(train), PcaIsolationForest().fit(train)
    tm = fit(spec, grid, train, epochs=args.epochs, seed=fseed,
             on_epoch=lambda e, loss: log(f"epoch {e} loss {loss:.4f}"))
    model = tm.torch_model().eval()
    batch, _ = load_training_data(train, grid)  # fit()'s split, reproduced
    perm = np.random.default_rng(fseed).permutation(len(batch))
    n_hold = max(20, round(0.25 * len(batch)))
    hold, tr = batch.take(perm[:n_hold]), batch.take(perm[n_hold:])
    sets = {"ref": hold.take(hold.label == NORMAL), "val": val, "test": test}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    terms: dict[str, dict[str, np.ndarray]] = {k: {} for k in sets}
    lat: dict[str, np.ndarray] = {}
    for k, b in sets.items():
        with torch.no_grad():
            recon, la = model.forward_parts(t(b.flux), t(b.ivar), t(b.z))
        good = (b.ivar > 0).astype(np.float64)
        pix = b.ivar * (b.flux - recon.numpy()) ** 2 * good
        r = score_torch(model, b)
        lat[k] = la.numpy().astype(np.float64)
        terms[k]["chi2"] = np.log(np.maximum(r.chi2_dof, 1e-6))
        terms[k]["gmm8aug"] = r.density_nll.astype(np.float64)
        for w in (32, 64, 128, 256):
            terms[k][f"win{w}"] = np.log(window_max_chi2(pix.astype(np.float64), good, w))
    aug_rng = np.random.default_rng([fseed, 1])
    lc_parts, la_parts = [], []
    with torch.no_grad():
        for s in range(0, len(tr), 1024):
            b = tr.take(slice(s, s + 1024))
            fa, ia = augment_masks(b.flux, b.ivar, grid.wave, aug_rng, 1.0)
            lc_parts.append(model.encode(t(b.flux), t(b.ivar), t(b.z)).numpy())
            la_parts.append(model.encode(t(fa), t(ia), t(b.z)).numpy())
    lc = np.concatenate(lc_parts).astype(np.float64)
    both = np.concatenate([lc, np.concatenate(la_parts).astype(np.float64)])
    log("scored; fitting latent densities")

    def trimmed(x: np.ndarray, k: int, frac: float, iters: int) -> DensityModel:
        dm = DensityModel.fit(x, k, 0)
        for _ in range(iters):
            nl = dm.nll(x)
            dm = DensityModel.fit(x[nl <= np.quantile(nl, 1 - frac)], k, 0)
        return dm

    dens: dict[str, DensityModel] = {}
    for src, x in (("clean", lc), ("both", both)):
        for k in (4, 8, 16, 32):
            dens[f"gmm{k}{src}"] = DensityModel.fit(x, k, 0)
            for frac in (0.05, 0.1, 0.2):
                for iters in (1, 2):
                    dens[f"gmm{k}{src}_t{frac}x{iters}"] = trimmed(x, k, frac, iters)
    density_terms = [*dens, "gmm8aug"]
    for name, dm in dens.items():
        for k in sets:
            terms[k][name] = dm.nll(lat[k])
    for src, x in (("clean", lc), ("both", both)):
        for frac in (0.0, 0.1, 0.2):
            f = IsolationForest(n_estimators=200, random_state=0).fit(x)
            if frac:
                sc = -f.score_samples(x)
                f = IsolationForest(n_estimators=200, random_state=0).fit(
                    x[sc <= np.quantile(sc, 1 - frac)])
            for k in sets:
                terms[k][f"if{src}_t{frac}"] = -f.score_samples(lat[k])
            density_terms.append(f"if{src}_t{frac}")
    zs: dict[str, dict[str, np.ndarray]] = {k: {} for k in sets}
    for name in terms["ref"]:
        loc, scale = _robust(terms["ref"][name])
        for k in sets:
            zs[k][name] = (terms[k][name] - loc) / scale

    cands: dict[str, dict[str, float]] = {"current": {"chi2": 1.0, "gmm8aug": 1.0}}
    for name in zs["ref"]:
        cands[f"{name} only"] = {name: 1.0}
    for dn in density_terms:
        for wc, wd in ((1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (0.5, 1.0)):
            cands[f"{wc}*chi2+{wd}*{dn}"] = {"chi2": wc, dn: wd}
    for dn in ("gmm8aug", "gmm8clean", "gmm8clean_t0.1x1", "gmm8both_t0.1x1", "ifclean_t0.0"):
        for w in (32, 64, 128, 256):
            for ww in (0.5, 1.0):
                for wd in (1.0, 2.0):
                    cands[f"chi2+{ww}*win{w}+{wd}*{dn}"] = {"chi2": 1.0, f"win{w}": ww, dn: wd}
    log(f"{len(cands)} candidates")

    def ap_table(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        m = detection_metrics(scores, labels)
        return {"overall": m["overall"]["ap"], **{c: v["ap"] for c, v in m["per_class"].items()}}

    res: dict[str, dict[str, dict[str, float]]] = {}
    for k, b in (("val", val), ("test", test)):
        labels = np.asarray(b.label).astype(str)
        res[k] = {"pca_chi2": ap_table(b0.score(b), labels),
                  "pca_iforest": ap_table(b1.score(b), labels)}
        for n, wts in cands.items():
            res[k][n] = ap_table(sum(a * zs[k][tn] for tn, a in wts.items()), labels)
    classes = [c for c in res["val"]["pca_chi2"] if c != "overall"]

    def wins(k: str, n: str) -> int:
        r, r0, r1 = res[k][n], res[k]["pca_chi2"], res[k]["pca_iforest"]
        return sum(r[c] >= max(r0[c], r1[c]) for c in classes)

    cur = res["val"]["current"]["overall"]

    def key(n: str) -> tuple[bool, int, float]:
        return res["val"][n]["overall"] >= cur, wins("val", n), res["val"][n]["overall"]

    fams: dict[str, Callable[[str], bool]] = {
        "weights": lambda n: "gmm8aug" in n and "win" not in n,
        "latent_gmm": lambda n: "gmm" in n and "gmm8aug" not in n and "win" not in n,
        "latent_iforest": lambda n: "*if" in n and "win" not in n,
        "window_chi2": lambda n: "win" in n,
    }
    names = [n for n in cands if n != "current"]
    picks = {f: max((n for n in names if g(n)), key=key) for f, g in fams.items()}
    picks["chosen"] = max(names, key=key)
    shown = ["pca_chi2", "pca_iforest", "current", *dict.fromkeys(picks.values())]
    out: dict[str, Any] = {
        "study": "qso-score-terms", "seed": seed, "fit_seed": fseed, "epochs": args.epochs,
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "n_candidates": len(cands), "picks": picks,
        "wins": {k: {n: wins(k, n) for n in shown[2:]} for k in ("val", "test")},
        "ap": {k: {n: res[k][n] for n in shown} for k in ("val", "test")},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
