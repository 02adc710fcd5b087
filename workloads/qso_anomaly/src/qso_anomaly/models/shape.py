"""Broad-band continuum shape term of the anomaly score (framework-neutral NumPy form).

The autoencoder reconstructs a reddened quasar, a star or a FeLoBAL almost as well as a normal
quasar (its decoder can bend the continuum), so neither χ²/dof nor −log p(latent) sees a
global change of the spectral shape clearly. This term does: the spectrum is reduced to the
ivar-weighted mean flux in a few wide observed-frame windows (log-spaced over the grid;
:data:`N_WINDOWS`), and y = log(window mean) is compared with a Gaussian fitted on the
training spectra per redshift bin (mean linear in z inside the bin, covariance = intrinsic
scatter; the measurement noise of each window is added per spectrum).

Observed pixels only: a window counts when at least :data:`MIN_COVERAGE` of its pixels have
ivar > 0, and the Gaussian is *marginalised* over the windows that do not count (the
distance uses the covariance of the observed windows only), so a masked camera or block
removes windows from the comparison instead of looking like a change of shape. The overall
flux level is a nuisance parameter: it is profiled out (the distance is that of the best
scale), so only the shape counts. The squared distance D² over n observed windows is χ² with
n − 1 degrees of freedom for a normal spectrum; it is mapped to a standard-normal deviate by
the Wilson–Hilferty transform so that spectra with different coverage share one scale:

    shape_z = ((D²/k)^(1/3) − (1 − 2/(9k))) / √(2/(9k)),  k = max(n − 1, 1).

The PyTorch and JAX forms (:func:`qso_anomaly.models.torch_model.shape_z_torch`,
:func:`qso_anomaly.models.jax_model.shape_z_jax`) compute the same from the arrays of
:meth:`ShapeModel.to_arrays`; :meth:`ShapeModel.zscore` is the float64 reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Number of log-spaced observed-frame windows.
N_WINDOWS = 4
#: Redshift bins (quantiles of the training redshifts) with their own Gaussian.
N_ZBINS = 12
#: Share of a window's pixels that must be observed (ivar > 0) for the window to count.
MIN_COVERAGE = 0.8
#: Window means are floored at this fraction of the spectrum's mean |window mean| before the
#: log (noise can make a window of a faint spectrum ≤ 0).
FLUX_FLOOR = 0.05
#: Share of the most distant training spectra of each bin left out of the fit (the training
#: data are unlabelled and contain anomalies); three passes.
TRIM = 0.1
#: Variance (in (Δ ln flux)²) added to every window's intrinsic variance: a floor for
#: flux-calibration systematics of ~1 % per window, and it keeps the fitted covariance
#: well conditioned where the training spectra are nearly degenerate.
SYS_VAR = 1e-4

ARRAY_KEYS = ("shape_win_edges", "shape_z_edges", "shape_zrange", "shape_mu", "shape_beta",
              "shape_cov")


def window_edges(wave: np.ndarray, n_windows: int = N_WINDOWS) -> np.ndarray:
    """Edges (n_windows + 1,) in Å of log-spaced windows covering ``wave``.

    The last edge lies 1 Å past the last pixel, so every pixel falls in one window.
    """
    return np.geomspace(float(wave[0]), float(wave[-1]) + 1.0, n_windows + 1)


def window_matrix(wave: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """One-hot (P, K) float64 matrix: pixel p lies in window k (edges[k] ≤ λ < edges[k+1])."""
    w = np.asarray(wave, np.float64)[:, None]
    e = np.asarray(edges, np.float64)
    return ((w >= e[None, :-1]) & (w < e[None, 1:])).astype(np.float64)


def features(flux: np.ndarray, ivar: np.ndarray, wave: np.ndarray, edges: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window features of N spectra (float64).

    Returns:
        ``(y, obs, noise)``: log window mean flux (N, K) (1.0 where unobserved), the window
        counts mask (N, K) bool, and the variance of y from the measurement noise (N, K)
        (0 where unobserved).
    """
    wm = window_matrix(wave, edges)
    good = (np.asarray(ivar) > 0).astype(np.float64)
    iv = np.asarray(ivar, np.float64) * good
    sw = iv @ wm
    sf = (iv * np.asarray(flux, np.float64)) @ wm
    cnt = good @ wm
    obs = (cnt >= MIN_COVERAGE * wm.sum(0)[None]) & (sw > 0)
    m = np.where(obs, sf / np.where(obs, sw, 1.0), 1.0)
    lev = (np.abs(m) * obs).sum(1) / np.maximum(obs.sum(1), 1)
    mm = np.maximum(m, FLUX_FLOOR * np.maximum(lev, 1e-6)[:, None])
    y = np.log(mm)
    noise = np.where(obs, 1.0 / (np.where(obs, sw, 1.0) * mm**2), 0.0)
    return y, obs, noise


def wilson_hilferty(d2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Standard-normal deviate of a χ²_dof value (Wilson–Hilferty); d2/dof floored at 1e-12."""
    k = np.asarray(dof, np.float64)
    return (np.maximum(d2 / k, 1e-12) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))


def profiled_d2(y: np.ndarray, obs: np.ndarray, noise: np.ndarray, mu: np.ndarray,
                cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distance over the observed windows with the level profiled out.

    Args:
        y: Log window means (N, K) from :func:`features`.
        obs: Windows that count (N, K), bool.
        noise: Measurement variance of y (N, K).
        mu: Expected y per spectrum (N, K).
        cov: Intrinsic covariance per spectrum (N, K, K).

    Returns:
        ``(d2, dof)``, each (N,): D² and max(n_observed − 1, 1).
    """
    m = obs.astype(np.float64)
    k = m.shape[1]
    eye = np.eye(k)
    s = cov + noise[:, :, None] * eye
    s = s * m[:, :, None] * m[:, None, :] + (1 - m)[:, :, None] * eye
    d = (y - mu) * m
    d = (d - (d.sum(1) / np.maximum(m.sum(1), 1))[:, None]) * m
    x = np.linalg.solve(s, np.stack([d, m], -1))
    dpd = (d * x[..., 0]).sum(1)
    opd = (m * x[..., 0]).sum(1)
    opo = (m * x[..., 1]).sum(1)
    d2 = dpd - opd**2 / np.maximum(opo, 1e-12)
    return np.maximum(d2, 0.0), np.maximum(m.sum(1) - 1, 1)


@dataclass
class ShapeModel:
    """Per-redshift-bin Gaussian of the log window fluxes (see the module docstring).

    Attributes:
        win_edges: Window edges (K + 1,) in Å.
        z_edges: Inner redshift-bin edges (B − 1,) (a spectrum's bin is
            ``searchsorted(z_edges, z)``, side left).
        zrange: Per bin (B, 2): [centre, half-width] of its training redshifts; the mean is
            linear in z inside the bin, z clipped to centre ± half-width.
        mu: Mean of y at the bin centre (B, K), centred (mean over windows 0).
        beta: dy/dz in the bin (B, K).
        cov: Intrinsic covariance of y (B, K, K), level-direction-free and well conditioned
            (projected to the contrasts, plus the mean contrast variance along the level
            direction, which the profiled distance does not see).
    """

    win_edges: np.ndarray
    z_edges: np.ndarray
    zrange: np.ndarray
    mu: np.ndarray
    beta: np.ndarray
    cov: np.ndarray

    def expected(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected y (N, K) and intrinsic covariance (N, K, K) at redshifts z."""
        z = np.asarray(z, np.float64)
        b = np.searchsorted(self.z_edges, z)
        zc, hw = self.zrange[b, 0], self.zrange[b, 1]
        dz = np.clip(z - zc, -hw, hw)
        return self.mu[b] + self.beta[b] * dz[:, None], self.cov[b]

    def zscore(self, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, wave: np.ndarray
               ) -> np.ndarray:
        """The shape deviate (N,) of spectra (float64 reference of the framework forms)."""
        y, obs, noise = features(flux, ivar, wave, self.win_edges)
        mu, cov = self.expected(z)
        return wilson_hilferty(*profiled_d2(y, obs, noise, mu, cov))

    @classmethod
    def fit(cls, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, wave: np.ndarray, *,
            n_windows: int = N_WINDOWS, n_zbins: int = N_ZBINS, trim: float = TRIM
            ) -> ShapeModel:
        """Fit on (unlabelled) training spectra; deterministic.

        Per bin and window: mean and slope in z by least squares over the spectra that
        observe the window; covariance from the pairs of windows both observed, its diagonal
        less the mean measurement variance (floored at 10 % of the raw variance). Three
        passes, each leaving out the ``trim`` share of the bin's spectra most distant under
        the previous pass.
        """
        z = np.asarray(z, np.float64)
        edges = window_edges(wave, n_windows)
        y, obs, noise = features(flux, ivar, wave, edges)
        nb = max(1, min(n_zbins, len(z) // 50))
        z_edges = np.quantile(z, np.linspace(0, 1, nb + 1)[1:-1]) if nb > 1 else np.zeros(0)
        zb = np.searchsorted(z_edges, z)
        k = y.shape[1]
        q = np.eye(k) - np.ones((k, k)) / k
        mu = np.zeros((nb, k))
        beta = np.zeros((nb, k))
        cov = np.repeat(np.eye(k)[None], nb, 0)
        zrange = np.zeros((nb, 2))
        for b in range(nb):
            sel = np.where(zb == b)[0]
            zs = z[sel]
            zrange[b] = [0.5 * (zs.max() + zs.min()), 0.5 * (zs.max() - zs.min())] if sel.size \
                else [0.0, 0.0]
            keep = np.ones(sel.size, bool)
            for _ in range(3):
                yb, ob, nsb = y[sel][keep], obs[sel][keep], noise[sel][keep]
                dz = zs[keep] - zrange[b, 0]
                mb, bb = np.zeros(k), np.zeros(k)
                for j in range(k):
                    o = ob[:, j]
                    if o.sum() < 10:
                        continue
                    a = np.stack([np.ones(o.sum()), dz[o]], 1)
                    mb[j], bb[j] = np.linalg.lstsq(a, yb[o, j], rcond=None)[0]
                res = yb - mb - bb * dz[:, None]
                c = np.eye(k)
                for i in range(k):
                    for j in range(i, k):
                        o = ob[:, i] & ob[:, j]
                        if o.sum() < 10:
                            v = 1.0 if i == j else 0.0
                        else:
                            v = float((res[o, i] * res[o, j]).mean())
                            if i == j:
                                v = max(v - float(nsb[o, i].mean()), 0.1 * v)
                        c[i, j] = c[j, i] = v
                c = q @ (c + SYS_VAR * np.eye(k)) @ q
                ev, evec = np.linalg.eigh(c)
                c = (evec * np.maximum(ev, 1e-6 * max(ev.max(), 1e-12))) @ evec.T
                c = q @ c @ q + np.trace(c) / max(k - 1, 1) * np.ones((k, k)) / k
                mu[b], beta[b], cov[b] = mb - mb.mean(), bb - bb.mean(), c
                if sel.size == 0:
                    break
                m_all, _ = cls(edges, z_edges, zrange, mu, beta, cov).expected(zs)
                cv = np.repeat(cov[b][None], sel.size, 0)
                zsc = wilson_hilferty(*profiled_d2(y[sel], obs[sel], noise[sel], m_all, cv))
                keep = zsc <= np.quantile(zsc, 1 - trim)
        return cls(edges, z_edges, zrange, mu, beta, cov)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as named arrays (keys :data:`ARRAY_KEYS`)."""
        return dict(zip(ARRAY_KEYS, (self.win_edges, self.z_edges, self.zrange, self.mu,
                                     self.beta, self.cov), strict=True))

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ShapeModel | None:
        """Inverse of :meth:`to_arrays`.

        None when the arrays are absent (a model saved without a shape term).
        """
        if any(k not in a for k in ARRAY_KEYS):
            return None
        return cls(*(np.asarray(a[k], np.float64) for k in ARRAY_KEYS))
