"""Gaussian-mixture latent density and score calibration (framework-neutral NumPy form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture


@dataclass
class DensityModel:
    """log p(l) = logsumexp_k [log w_k − D/2 log 2π + Σ log diag L_k − ½‖(l − μ_k) L_k‖²]
    (L_k = Cholesky factor of the precision, sklearn convention), plus the robust location and
    scale of log χ²/dof and −log p on held-out data that standardise the two score terms."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    prec_chol: np.ndarray  # (K, D, D)
    chi2_loc: float = 0.0
    chi2_scale: float = 1.0
    nll_loc: float = 0.0
    nll_scale: float = 1.0

    @classmethod
    def standard_normal(cls, dim: int) -> DensityModel:
        return cls(np.ones(1), np.zeros((1, dim)), np.eye(dim)[None].copy())

    @classmethod
    def fit(cls, latents: np.ndarray, n_components: int, seed: int = 0) -> DensityModel:
        k = max(1, min(n_components, latents.shape[0] // 20))
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed,
                              n_init=1, max_iter=200)
        gmm.fit(latents.astype(np.float64))
        return cls(gmm.weights_, gmm.means_, gmm.precisions_cholesky_)

    def nll(self, latents: np.ndarray) -> np.ndarray:
        lat = np.asarray(latents, dtype=np.float64)
        d = lat.shape[1]
        diff = lat[:, None, :] - self.means[None]  # (N, K, D)
        y = np.einsum("nkd,kde->nke", diff, self.prec_chol)
        logdet = np.log(np.diagonal(self.prec_chol, axis1=1, axis2=2)).sum(-1)
        logp = np.log(self.weights) - 0.5 * d * np.log(2 * np.pi) + logdet - 0.5 * (y**2).sum(-1)
        m = logp.max(axis=1, keepdims=True)
        return -(m[:, 0] + np.log(np.exp(logp - m).sum(axis=1)))

    def calibrate(self, chi2_dof: np.ndarray, nll: np.ndarray) -> None:
        """Set robust standardisation (median, IQR/1.349) from held-out normal data."""
        lc = np.log(np.maximum(chi2_dof, 1e-6))
        self.chi2_loc, self.chi2_scale = _robust(lc)
        self.nll_loc, self.nll_scale = _robust(nll)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights, "means": self.means, "prec_chol": self.prec_chol,
            "calib": np.array([self.chi2_loc, self.chi2_scale, self.nll_loc, self.nll_scale]),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> DensityModel:
        c = np.asarray(a["calib"], dtype=np.float64)
        return cls(np.asarray(a["weights"]), np.asarray(a["means"]), np.asarray(a["prec_chol"]),
                   float(c[0]), float(c[1]), float(c[2]), float(c[3]))


def _robust(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    q1, q2, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return float(q2), float(max((q3 - q1) / 1.349, 1e-6))
