"""B0: ivar-weighted PCA reconstruction χ²; B1: IsolationForest on PCA coefficients.

Observed-frame spectra of quasars at different redshifts do not share one basis, so the PCA is
fitted per redshift bin (quantile bins of the training redshifts), in the observed frame, on
spectra normalised like the autoencoder's input (mean |flux| over good pixels). Masked pixels
are filled with the bin mean for the fit; reconstruction is an ivar-weighted least-squares fit
of the bin mean + components, so masked pixels never count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.errors import ModelError


def _normalise(batch: SpectraBatch) -> tuple[np.ndarray, np.ndarray]:
    good = batch.ivar > 0
    scale = (np.abs(batch.flux) * good).sum(1) / np.maximum(good.sum(1), 1)
    scale = np.maximum(scale, 1e-3)
    return batch.flux * good / scale[:, None], batch.ivar * scale[:, None] ** 2


@dataclass
class _BinPca:
    mean: np.ndarray
    components: np.ndarray  # (K, P)


@dataclass
class PcaChi2:
    """PCA reconstruction χ²/dof per redshift bin (score: higher = more anomalous)."""

    n_components: int = 8
    n_zbins: int = 12
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bins: list[_BinPca] = field(default_factory=list)

    def fit(self, batch: SpectraBatch) -> PcaChi2:
        if len(batch) < self.n_zbins * (self.n_components + 2):
            raise ModelError(f"PCA baseline needs more spectra than {len(batch)}")
        self.edges = np.quantile(batch.z, np.linspace(0, 1, self.n_zbins + 1)[1:-1])
        x, iv = _normalise(batch)
        zb = np.searchsorted(self.edges, batch.z)
        self.bins = []
        for b in range(self.n_zbins):
            sel = zb == b
            xb, good = x[sel], iv[sel] > 0
            mean = (xb * good).sum(0) / np.maximum(good.sum(0), 1)
            filled = np.where(good, xb, mean)
            pca = PCA(self.n_components, random_state=0).fit(filled - mean)
            self.bins.append(_BinPca(mean.astype(np.float32), pca.components_.astype(np.float32)))
        return self

    def coefficients(self, batch: SpectraBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin index (N,), weighted LSQ coefficients (N, K), χ²/dof (N,))."""
        if not self.bins:
            raise ModelError("PCA baseline is not fitted; call fit(batch) first")
        x, iv = _normalise(batch)
        zb = np.searchsorted(self.edges, batch.z)
        coef = np.zeros((len(batch), self.n_components), dtype=np.float64)
        chi2 = np.zeros(len(batch), dtype=np.float64)
        for b, bp in enumerate(self.bins):
            sel = np.where(zb == b)[0]
            if sel.size == 0:
                continue
            basis = np.concatenate([bp.mean[None], bp.components]).astype(np.float64)
            w = iv[sel].astype(np.float64)
            a = np.einsum("kp,np,lp->nkl", basis, w, basis)
            a += 1e-6 * np.eye(basis.shape[0])[None]
            rhs = np.einsum("kp,np->nk", basis, w * x[sel])
            c = np.linalg.solve(a, rhs[..., None])[..., 0]
            resid = x[sel] - c @ basis
            dof = np.maximum((w > 0).sum(1) - basis.shape[0], 1)
            chi2[sel] = (w * resid**2).sum(1) / dof
            coef[sel] = c[:, 1:]
        return zb, coef, chi2

    def score(self, batch: SpectraBatch) -> np.ndarray:
        return self.coefficients(batch)[2]


@dataclass
class PcaIsolationForest:
    """IsolationForest on the per-bin PCA coefficients (score: −score_samples)."""

    n_components: int = 8
    n_zbins: int = 12
    seed: int = 0
    pca: PcaChi2 | None = None
    forests: list[IsolationForest] = field(default_factory=list)

    def fit(self, batch: SpectraBatch) -> PcaIsolationForest:
        self.pca = PcaChi2(self.n_components, self.n_zbins).fit(batch)
        zb, coef, _ = self.pca.coefficients(batch)
        self.forests = []
        for b in range(self.n_zbins):
            f = IsolationForest(n_estimators=200, random_state=self.seed + b)
            f.fit(coef[zb == b])
            self.forests.append(f)
        return self

    def score(self, batch: SpectraBatch) -> np.ndarray:
        if self.pca is None:
            raise ModelError("PCA+IsolationForest baseline is not fitted")
        zb, coef, _ = self.pca.coefficients(batch)
        out = np.zeros(len(batch))
        for b, f in enumerate(self.forests):
            sel = zb == b
            if sel.any():
                out[sel] = -f.score_samples(coef[sel])
        return out
