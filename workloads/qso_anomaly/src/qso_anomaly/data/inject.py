"""Anomaly injection recipes (spectra-and-models.md §5). Each returns the ground-truth mask.

Rest-frame recipes act on a quasar model sampled on the generator's 1 Å rest grid ``rw``;
observed-frame recipes act on the noiseless observed flux. Pixels are flagged in the truth mask
where the injection changes the flux by a noticeable amount (troughs, peaks, spikes, steps).
"""

from __future__ import annotations

import numpy as np
from scipy.special import wofz

from qso_anomaly.data import lines as L
from qso_anomaly.data.grid import ARM_JOINS

Rest = tuple[np.ndarray, np.ndarray]  # (flux, truth mask) on the rest grid


def continuum(rw: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Line-free continuum: power law between ±10 Å medians at the composite's anchors."""
    xs, ys = [], []
    for a in L.CONTINUUM_ANCHORS:
        sel = (rw > a - 10) & (rw < a + 10)
        if sel.any():
            xs.append(a)
            ys.append(max(float(np.median(f[sel])), 1e-3))
    lx, ly = np.log(xs), np.log(ys)
    lw = np.log(rw)
    out = np.interp(lw, lx, ly)
    # power-law extrapolation beyond the first/last anchors
    lo, hi = lw < lx[0], lw > lx[-1]
    out[lo] = ly[0] + (ly[1] - ly[0]) / (lx[1] - lx[0]) * (lw[lo] - lx[0])
    out[hi] = ly[-1] + (ly[-1] - ly[-2]) / (lx[-1] - lx[-2]) * (lw[hi] - lx[-1])
    return np.exp(out)


def _window(rw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (rw >= lo) & (rw <= hi)


def _trough(rw: np.ndarray, centre: float, v_lo: float, v_hi: float, depth: float) -> np.ndarray:
    """Transmission 1 − depth·profile between outflow velocities v_lo < v_hi (km/s, >0 = blue)."""
    lam_hi = centre * (1 - v_lo / L.C_KMS)
    lam_lo = centre * (1 - v_hi / L.C_KMS)
    edge = 0.15 * (lam_hi - lam_lo) + 1.0
    prof = np.clip(np.minimum(rw - lam_lo, lam_hi - rw) / edge, 0.0, 1.0)
    return 1.0 - depth * prof


def _bal_troughs(
    rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, centres: list[float]
) -> Rest:
    trans = np.ones_like(f)
    ntr = int(rng.integers(1, 4))
    for _ in range(ntr):
        v_min = rng.uniform(3_000.0, 20_000.0)
        width = rng.uniform(2_000.0, 10_000.0) if rng.uniform() < 0.8 else rng.uniform(450, 2000)
        depth = rng.uniform(0.3, 0.9)
        for c in centres:
            trans *= _trough(rw, c, v_min, min(v_min + width, 25_000.0), depth)
    return f * trans, trans < 0.97


def hibal(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    return _bal_troughs(rw, f, rng, [L.CIV, L.SIIV, L.NV, L.LYA])


def lobal(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    return _bal_troughs(rw, f, rng, [L.CIV, L.SIIV, L.NV, L.MGII, L.ALIII])


def felobal(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    out, truth = _bal_troughs(rw, f, rng, [L.MGII, L.ALIII, L.CIV])
    trans = np.ones_like(f)
    # many narrow FeII/FeIII troughs in the UV1/2/3 blends and ≈ 2750 Å
    for _ in range(int(rng.integers(15, 35))):
        c = rng.choice([rng.uniform(2300.0, 2650.0), rng.uniform(2720.0, 2780.0)])
        trans *= _trough(rw, c, 0.0, rng.uniform(600.0, 2500.0), rng.uniform(0.3, 0.8))
    # depressed continuum blueward of ≈ 2800 Å
    drop = rng.uniform(0.3, 0.7)
    ramp = np.clip((2800.0 - rw) / 150.0, 0.0, 1.0)
    trans *= 1.0 - drop * ramp
    return out * trans, truth | (trans < 0.97)


def smc_k(rw: np.ndarray) -> np.ndarray:
    """SMC-like extinction curve A_λ / E(B−V) ≈ 1.39 (λ/µm)^−1.2 (Prévot et al. 1984 form)."""
    return 1.39 * (rw / 1e4) ** -1.2


def reddened(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    ebv = float(np.exp(rng.uniform(np.log(0.1), np.log(1.0))))
    att = 10 ** (-0.4 * ebv * smc_k(rw))
    obs_rest = _window(rw, 3600.0 / (1 + z), 9824.0 / (1 + z))
    norm = float(np.median(att[obs_rest])) if obs_rest.any() else 1.0
    ratio = att / norm
    return f * att, np.abs(np.log(ratio)) > 0.1


def _split_lines(rw: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cont = continuum(rw, f)
    return cont, f - cont


def _shift(rw: np.ndarray, x: np.ndarray, v: float) -> np.ndarray:
    """x redshifted by velocity v (km/s): x'(λ) = x(λ / (1 + v/c))."""
    return np.interp(rw / (1 + v / L.C_KMS), rw, x, left=0.0, right=0.0)


def double_peaked(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    cont, lines = _split_lines(rw, f)
    v = rng.uniform(2_000.0, 5_000.0)
    out = f.copy()
    truth = np.zeros_like(f, dtype=bool)
    for name in ("mgii", "hbeta", "halpha"):
        lo, hi = L.LINE_WINDOWS[name]
        pad = (hi - lo) * 0.6
        win = _window(rw, lo - pad, hi + pad)
        core = lines * _window(rw, lo, hi)
        amp = rng.uniform(0.9, 1.4)
        dp = 0.5 * amp * (_shift(rw, core, v) + _shift(rw, core, -v))
        new = np.where(win, cont + (lines - core) + dp, out)
        truth |= win & (np.abs(new - f) > 0.1 * cont)
        out = new
    return out, truth


def weak_line(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    cont, lines = _split_lines(rw, f)
    s = rng.uniform(0.05, 0.25)
    inwin = np.zeros_like(f, dtype=bool)
    for lo, hi in L.LINE_WINDOWS.values():
        inwin |= _window(rw, lo, hi)
    out = np.where(inwin, cont + s * lines, f)
    return out, inwin & (np.abs(out - f) > 0.1 * cont)


def extreme_lines(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    cont, lines = _split_lines(rw, f)
    lo_obs, hi_obs = 3650.0 / (1 + z), 9800.0 / (1 + z)
    options = []
    if lo_obs < L.CIV - 60 and hi_obs > L.CIV + 60:
        options += ["civ_peaker"]
        if lo_obs < L.SIIV - 40:
            options += ["siiv_civ"]
    if hi_obs > L.OIII + 30:
        options += ["oiii"]
    if (lo_obs < 2600 and hi_obs > 3050) or hi_obs > 5350:
        options += ["feii"]
    if not options:
        options = ["feii"]
    kind = str(rng.choice(options))
    out = f.copy()
    if kind == "civ_peaker":
        lo, hi = L.LINE_WINDOWS["civ"]
        core = lines * _window(rw, lo, hi)
        narrow = np.interp(L.CIV + (rw - L.CIV) * 2.0, rw, core) * rng.uniform(2.5, 4.0)
        out = f - core + narrow
    elif kind == "siiv_civ":
        lo, hi = L.LINE_WINDOWS["siiv"]
        core = lines * _window(rw, lo, hi)
        civ_peak = float(np.max(lines[_window(rw, *L.LINE_WINDOWS["civ"])]))
        siiv_peak = max(float(np.max(core)), 1e-3)
        out = f + core * (civ_peak / siiv_peak * rng.uniform(0.9, 1.2) - 1.0)
    elif kind == "oiii":
        lo, hi = L.LINE_WINDOWS["oiii"]
        core = lines * _window(rw, lo, hi)
        out = f + core * (rng.uniform(5.0, 10.0) - 1.0)
    else:
        for lo, hi in L.FEII_WINDOWS:
            win = _window(rw, lo, hi)
            bump = np.clip(lines, 0.0, None) * win + 0.25 * cont * win
            out = out + bump * rng.uniform(2.0, 3.0)
    return out, np.abs(out - f) > 0.1 * cont


def voigt_tau(rw_obs: np.ndarray, z_abs: float, log_nhi: float, b_kms: float = 30.0) -> np.ndarray:
    """Optical depth of a Lyα absorber (Voigt profile) at observed wavelengths ``rw_obs`` (Å)."""
    lam0 = L.LYA * 1e-8  # cm
    f_osc, gamma = 0.4164, 6.265e8
    c_cms = L.C_KMS * 1e5
    nu = c_cms / (rw_obs / (1 + z_abs) * 1e-8)
    nu0 = c_cms / lam0
    dnu_d = b_kms * 1e5 / lam0
    a = gamma / (4 * np.pi * dnu_d)
    u = (nu - nu0) / dnu_d
    phi = wofz(u + 1j * a).real / (np.sqrt(np.pi) * dnu_d)
    return 10**log_nhi * 0.02654 * f_osc * phi


def dla(rw: np.ndarray, f: np.ndarray, rng: np.random.Generator, z: float) -> Rest:
    lam_hi = L.LYA * (1 + z) * 0.97
    lam_lo = 3750.0
    lam_abs = rng.uniform(lam_lo, max(lam_lo + 1.0, lam_hi))
    z_abs = lam_abs / L.LYA - 1
    log_nhi = rng.uniform(20.3, 21.7)
    tau = voigt_tau(rw * (1 + z), z_abs, log_nhi)
    trans = np.exp(-np.minimum(tau, 50.0))
    return f * trans, trans < 0.9


def wrong_redshift(z_true: float, rng: np.random.Generator) -> float:
    """A catalogue redshift produced by a line confusion or a random catastrophic error."""
    pairs = [(L.MGII, L.CIV), (L.CIV, L.MGII), (L.MGII, L.CIII), (L.CIII, L.MGII),
             (L.CIV, L.LYA), (L.LYA, L.CIV)]
    for _ in range(10):
        if rng.uniform() < 0.7:
            true_line, claimed = pairs[int(rng.integers(len(pairs)))]
            lam = true_line * (1 + z_true)
            if not 3650.0 < lam < 9750.0:
                continue
            z_cat = lam / claimed - 1
        else:
            z_cat = z_true + rng.choice([-1, 1]) * rng.uniform(0.15, 0.6)
        if 0.05 < z_cat < 4.5 and abs(z_cat - z_true) > 0.1:
            return float(z_cat)
    return float(z_true + 0.3)


def line_pixels(wave: np.ndarray, z: float) -> np.ndarray:
    """Observed pixels inside the broad-line windows for a QSO at redshift z."""
    out = np.zeros(wave.shape, dtype=bool)
    rest = wave / (1 + z)
    for name in ("lya_nv", "civ", "ciii", "mgii", "hbeta", "halpha"):
        lo, hi = L.LINE_WINDOWS[name]
        out |= (rest >= lo) & (rest <= hi)
    return out


def sky_residual(
    wave: np.ndarray, sigma: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Additive sky-subtraction residuals (not reflected in ivar): (delta flux, truth mask)."""
    step = float(wave[1] - wave[0])
    cands = [s for s in L.SKY_LINES if wave[0] + 5 < s < wave[-1] - 5]
    k = min(len(cands), int(rng.integers(4, 11)))
    chosen = rng.choice(cands, size=k, replace=False)
    delta = np.zeros_like(wave)
    width = 1.0  # Å, line-spread σ
    # pixel-integrated Gaussian so that coarse grids keep the line flux
    for s in chosen:
        amp_sigma = rng.uniform(4.0, 15.0) * (1 if rng.uniform() < 0.75 else -1)
        edges_lo = (wave - step / 2 - s) / (np.sqrt(2) * width)
        edges_hi = (wave + step / 2 - s) / (np.sqrt(2) * width)
        from scipy.special import erf

        frac = 0.5 * (erf(edges_hi) - erf(edges_lo))
        j = int(np.argmin(np.abs(wave - s)))
        peak = max(float(frac[j]), 1e-6)
        delta += amp_sigma * sigma[j] * frac / peak
    return delta, np.abs(delta) > 0.5 * sigma


def arm_step(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative flux step at an arm join: (factor per pixel, truth mask)."""
    lo, hi = ARM_JOINS[int(rng.integers(len(ARM_JOINS)))]
    s = rng.uniform(0.15, 0.5) * (1 if rng.uniform() < 0.5 else -1)
    mid = (lo + hi) / 2
    factor = np.where(wave > mid, 1.0 + s, 1.0)
    truth = (wave > lo - 40.0) & (wave < hi + 40.0)
    return factor, truth
