"""Synthetic DESI-like quasar survey ``qso-inject-v1`` grounded in the vendored templates.

Normal quasars: the Vanden Berk composite plus random redrock QSO eigen-directions (LOZ for
z < 1.5, HIZ above), a random continuum slope and a stochastic Lyα forest, with z and S/N drawn
from the DR1 QSO corpus quantiles. Anomalies are injected per :mod:`qso_anomaly.data.inject`
with ground-truth pixel masks. Everything is seeded: the same (seed, n, grid, fraction) gives
bit-identical spectra, and each shard of :func:`write_survey` has its own derived seed, so a
survey of any size streams shard by shard without holding more than one shard in memory.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from scipy.ndimage import gaussian_filter1d

from qso_anomaly.data import inject
from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.classes import ANOMALY_CLASSES, CLASS_INFO, NORMAL
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.lines import LYA
from qso_anomaly.data.noise import (
    NATIVE_STEP,
    draw_bad_pixels,
    draw_snr,
    draw_z,
    noise_shape,
    pixel_scale,
)
from qso_anomaly.data.rebin import finish, rebin_ivar
from qso_anomaly.data.templates import (
    STAR_KINDS,
    rest_basis,
    rest_wave,
    star_on_grid,
    template_hashes,
)
from qso_anomaly.errors import DataError

GENERATOR_VERSION = "qso-inject-v1"
TARGETID_BASE = 39_600_000_000_000_000

REST_RECIPES = {
    "hibal": inject.hibal,
    "lobal": inject.lobal,
    "felobal": inject.felobal,
    "reddened": inject.reddened,
    "double_peaked": inject.double_peaked,
    "weak_line": inject.weak_line,
    "extreme_lines": inject.extreme_lines,
    "dla": inject.dla,
}

Seed = int | Sequence[int]


def _rng(seed: Seed) -> np.random.Generator:
    entropy = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _assign_labels(
    rng: np.random.Generator, n: int, fraction: float, classes: Sequence[str]
) -> np.ndarray:
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"anomaly_fraction must be in [0, 1], got {fraction}")
    unknown = [c for c in classes if c not in CLASS_INFO]
    if unknown:
        raise DataError(f"unknown anomaly classes {unknown}; known: {list(ANOMALY_CLASSES)}")
    labels = np.full(n, NORMAL, dtype=object)
    n_anom = round(n * fraction) if classes else 0
    if n_anom:
        offset = int(rng.integers(len(classes)))
        names = [classes[(offset + i) % len(classes)] for i in range(n_anom)]
        labels[rng.permutation(n)[:n_anom]] = names
    return labels.astype(str)


def _quasar_rest(
    rng: np.random.Generator, rw: np.ndarray, z: float, floor: dict[str, np.ndarray]
) -> np.ndarray:
    kind = "LOZ" if z < 1.5 else "HIZ"
    rb = rest_basis(kind)
    f = rb.mean + rng.normal(0.0, 1.0, rb.variations.shape[0]) @ rb.variations
    f = f * (rw / 2500.0) ** rng.normal(0.0, 0.25)
    forest = rw < LYA
    if forest.any():
        g = gaussian_filter1d(rng.normal(0.0, 1.0, int(forest.sum())), 1.5)
        g /= g.std() + 1e-9
        tau0 = 0.25 * ((1 + z) / 3.0) ** 2
        trans = np.exp(-tau0 * np.exp(0.8 * g))
        f[forest] *= trans / trans.mean()
    return np.maximum(f, floor[kind])


def generate(
    n: int,
    seed: Seed,
    grid: WavelengthGrid | None = None,
    anomaly_fraction: float = 0.1,
    *,
    classes: Sequence[str] = ANOMALY_CLASSES,
    targetid_start: int = TARGETID_BASE,
    signal: bool = False,
) -> SpectraBatch:
    """``n`` spectra in memory (use :func:`write_survey` for large surveys).

    Spectra are drawn on the native 0.8 Å grid and rebinned onto ``grid`` with
    :func:`qso_anomaly.data.rebin.rebin_ivar` (the same rebinning as real coadds).
    ``signal=True`` also records ``meta["signal_chi2"]``: per spectrum, the χ² of the injected
    signal against the noise, Σ ivar·(injected − un-injected model)² over valid pixels on the
    native grid (0 for normal quasars) — the detectability of the injection at its S/N. The
    un-injected comparison for ``star`` is a quasar at the catalogue z drawn from a side stream,
    so the main random stream (and thus the spectra) is the same with or without it."""
    grid = grid or WavelengthGrid.desi_edr()
    out_grid = grid
    grid = native_grid(out_grid)
    rng = _rng(seed)
    wave = grid.wave
    npix = grid.npix
    rw = rest_wave()
    floor = {
        k: 0.05 * inject.continuum(rw, rest_basis(k).mean) for k in ("LOZ", "HIZ")
    }
    shape = noise_shape(grid) * pixel_scale(grid)

    labels = _assign_labels(rng, n, anomaly_fraction, classes)
    z_true = draw_z(rng, n)
    for cls in sorted(set(labels.tolist()) - {NORMAL}):  # sorted: independent of PYTHONHASHSEED
        sel = labels == cls
        z_true[sel] = draw_z(rng, int(sel.sum()), *CLASS_INFO[cls].z_range)
    z_cat = z_true.copy()
    snr = draw_snr(rng, n)
    amp = np.exp(rng.normal(0.0, 0.6, n))

    flux = np.empty((n, npix), dtype=np.float32)
    ivar = np.empty((n, npix), dtype=np.float32)
    mask = np.zeros((n, npix), dtype=bool)
    truth = np.zeros((n, npix), dtype=bool)

    signal_chi2 = np.zeros(n, dtype=np.float64)
    side = _rng([*np.atleast_1d(seed).tolist(), 7919]) if signal else None
    for i in range(n):
        cls = labels[i]
        z = float(z_true[i])
        clean: np.ndarray | None = None
        if cls == "star":
            kind = STAR_KINDS[int(rng.integers(len(STAR_KINDS)))]
            basis, coeff = star_on_grid(kind, (grid.start, grid.step, npix))
            model = coeff[int(rng.integers(coeff.shape[0]))] @ basis
            t_obs = np.ones(npix, dtype=bool)
            if side is not None:  # the quasar the catalogue claims
                clean = np.interp(wave / (1 + z), rw, _quasar_rest(side, rw, z, floor))
        else:
            f = _quasar_rest(rng, rw, z, floor)
            f0 = f
            t_rest = np.zeros(rw.shape, dtype=bool)
            if cls in REST_RECIPES:
                f, t_rest = REST_RECIPES[cls](rw, f, rng, z)
            obs_rest = wave / (1 + z)
            model = np.interp(obs_rest, rw, f)
            clean = np.interp(obs_rest, rw, f0)
            t_obs = np.interp(obs_rest, rw, t_rest.astype(np.float64)) > 0.3
            if cls == "wrong_z":
                z_cat[i] = inject.wrong_redshift(z, rng)
                t_obs = inject.line_pixels(wave, z) | inject.line_pixels(wave, float(z_cat[i]))
                clean = np.interp(wave / (1 + float(z_cat[i])), rw, f0)
            elif cls == "arm_step":
                factor, t_obs = inject.arm_step(wave, rng)
                model = model * factor
        med = float(np.median(model[model > 0])) if np.any(model > 0) else 1.0
        model = model * (amp[i] / med)
        sigma = amp[i] / snr[i] * shape
        obs = model + sigma * rng.normal(0.0, 1.0, npix)
        delta = None
        if cls == "sky_residual":
            delta, t_obs = inject.sky_residual(wave, sigma, rng)
            obs = obs + delta
        bad = draw_bad_pixels(rng, npix)
        iv = 1.0 / sigma**2
        iv[bad] = 0.0
        obs[bad] = 0.0
        if signal and cls != NORMAL:
            if delta is not None:
                diff = delta
            elif clean is not None:
                cm = float(np.median(clean[clean > 0])) if np.any(clean > 0) else 1.0
                diff = model - clean * (amp[i] / cm)
            else:
                diff = np.zeros(npix)
            signal_chi2[i] = float(np.sum(iv * diff**2))
        flux[i] = obs
        ivar[i] = iv
        mask[i] = bad
        truth[i] = t_obs

    if grid != out_grid:  # the same inverse-variance rebinning as real coadds
        num, den, _, truth_r = rebin_ivar(wave, flux, ivar, out_grid, extra=truth)
        flux, ivar, mask = finish(num, den)
        assert truth_r is not None
        truth = truth_r
    return SpectraBatch(
        targetid=targetid_start + np.arange(n, dtype=np.int64),
        z=z_cat.astype(np.float32),
        flux=flux,
        ivar=ivar,
        mask=mask,
        label=labels,
        truth_mask=truth,
        snr=snr.astype(np.float32),
        meta={"generator": GENERATOR_VERSION, "z_true": z_true.astype(np.float32),
              **({"signal_chi2": signal_chi2} if signal else {})},
    )


def native_grid(grid: WavelengthGrid) -> WavelengthGrid:
    """The 0.8 Å grid whose pixels rebin exactly onto ``grid`` (``k`` native pixels per output
    pixel when ``grid.step`` = k × 0.8 Å); ``grid`` itself when its step is not such a multiple."""
    k = grid.step / NATIVE_STEP
    kk = round(k)
    if kk <= 1 or abs(k - kk) > 1e-6:
        return grid
    start = round(grid.start - NATIVE_STEP * (kk // 2), 6)
    return WavelengthGrid(start, round(start + NATIVE_STEP * (grid.npix * kk - 1), 6),
                          NATIVE_STEP)


def survey_manifest(
    n: int, seed: int, shard_size: int, grid: WavelengthGrid, anomaly_fraction: float,
    classes: Sequence[str],
) -> dict[str, Any]:
    return {
        "generator": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "shard_size": shard_size,
        "grid": grid.to_dict(),
        "anomaly_fraction": anomaly_fraction,
        "classes": list(classes),
        "templates_sha256": template_hashes(),
    }


def write_survey(
    out_dir: str | Path,
    n: int,
    seed: int,
    shard_size: int = 5000,
    grid: WavelengthGrid | None = None,
    anomaly_fraction: float = 0.1,
    *,
    classes: Sequence[str] = ANOMALY_CLASSES,
    skip_existing: bool = True,
) -> list[Path]:
    """Write ``n`` spectra as Parquet shards ``shard-00000.parquet``… (one shard in memory at a
    time) plus ``manifest.json`` (seed, grid, template sha256s, per-shard class counts).

    Shard ``i`` is generated from seed ``(seed, i)``, so shards are reproducible independently
    and an interrupted run resumes by skipping complete shards (files are written atomically).
    """
    if shard_size < 1 or n < 0:
        raise DataError(f"need n >= 0 and shard_size >= 1, got n={n}, shard_size={shard_size}")
    grid = grid or WavelengthGrid.desi_edr()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = survey_manifest(n, seed, shard_size, grid, anomaly_fraction, classes)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and skip_existing:
        old = json.loads(manifest_path.read_text())
        old_key = {k: old.get(k) for k in ("n", "seed", "shard_size", "grid", "generator")}
        new_key = {k: manifest[k] for k in old_key}
        if old_key != new_key:
            raise DataError(
                f"{out} already holds a different survey ({old_key})",
                hint="use an empty directory or pass skip_existing=False",
            )
    paths: list[Path] = []
    shard_counts: list[dict[str, int]] = []
    nshards = (n + shard_size - 1) // shard_size
    for i in range(nshards):
        m = min(shard_size, n - i * shard_size)
        path = out / f"shard-{i:05d}.parquet"
        paths.append(path)
        if skip_existing and path.exists():
            labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
            shard_counts.append(dict(Counter(labels)))
            continue
        batch = generate(
            m, (seed, i), grid, anomaly_fraction, classes=classes,
            targetid_start=TARGETID_BASE + i * shard_size,
        )
        write_batch(batch, path, grid)
        shard_counts.append(dict(Counter(batch.label.tolist() if batch.label is not None else [])))
    manifest["shards"] = [
        {"path": p.name, "counts": c} for p, c in zip(paths, shard_counts, strict=True)
    ]
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    return paths


#: Parquet codec of the shards. On 2,500 synthetic spectra of 1,946 px, reading flux, ivar and
#: mask cost 0.030 CPU-ms per spectrum with zstd, 0.018 with lz4 and 0.016 uncompressed, for
#: files of 36.4, 40.3 and 41.5 MB (noisy floats barely compress): lz4 keeps most of the
#: speed of no codec (issue 15, docs/benchmarks.md). Only the label column is
#: dictionary-encoded: the numeric columns have no repeats, and the 1 MB dictionary Arrow tried
#: first on each pixel column was wasted (40.3 → 39.0 MB, same read cost).
SHARD_COMPRESSION = "lz4"


def write_batch(batch: SpectraBatch, path: str | Path, grid: WavelengthGrid | None) -> Path:
    """Write one batch as a Parquet file atomically (temp file + rename).

    Pixel columns are ``fixed_size_list`` with non-null elements
    (:func:`qso_anomaly.data.batch.pixel_type`), compressed with :data:`SHARD_COMPRESSION`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(batch.to_arrow(grid), tmp, compression=SHARD_COMPRESSION,
                   use_dictionary=["label"])
    os.replace(tmp, path)
    return path
