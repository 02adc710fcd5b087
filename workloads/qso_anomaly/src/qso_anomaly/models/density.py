"""Gaussian-mixture latent density and score calibration (framework-neutral NumPy form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qso_anomaly.models.shape import ShapeModel


@dataclass
class DensityModel:
    """Gaussian-mixture density of the latents plus the calibration of the score terms.

    log p(l) = logsumexp_k [log w_k − D/2 log 2π + Σ log diag L_k − ½‖(l − μ_k) L_k‖²], with
    L_k the Cholesky factor of the precision matrix of component k (scikit-learn's
    ``GaussianMixture.precisions_cholesky_`` convention, ``covariance_type="full"``). The
    calibration fields are the location and tail scale (median, 99th percentile − median) of
    log χ²/dof, of −log p, of the shape deviate and of the trough depth on held-out normal
    spectra; they standardise the terms of the anomaly score
    (:func:`qso_anomaly.models.torch_model.score_parts_torch`); ``shape`` is the broad-band
    shape model of the third term, the fourth (:mod:`qso_anomaly.models.trough`) needs no
    fitted arrays, only its calibration.

    Attributes:
        weights: Mixture weights w_k, shape (K,), float64, summing to 1.
        means: Component means μ_k, shape (K, D) with D the latent dimension, in latent units.
        prec_chol: Cholesky factors L_k of the component precisions, shape (K, D, D).
        chi2_loc: Median of log(χ²/dof) on held-out data (dimensionless).
        chi2_scale: 99th percentile − median of log(χ²/dof) on held-out data (> 0).
        nll_loc: Median of −log p(latent) on held-out data, in nats.
        nll_scale: 99th percentile − median of −log p(latent) on held-out data, in nats (> 0).
        shape: The broad-band continuum shape model (:mod:`qso_anomaly.models.shape`), the
            third score term; None for a model without it (saved before it existed).
        shape_loc: Median of the shape deviate on held-out data (dimensionless).
        shape_scale: 99th percentile − median of the shape deviate on held-out data (> 0).
        trough_loc: Median of the trough depth on held-out data (a fraction of the flux);
            None for a model without the trough term (fitted before ``qso-ae-2.2.0`` or with
            ``trough_weight`` 0).
        trough_scale: 99th percentile − median of the trough depth on held-out data (> 0).
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    prec_chol: np.ndarray  # (K, D, D)
    chi2_loc: float = 0.0
    chi2_scale: float = 1.0
    nll_loc: float = 0.0
    nll_scale: float = 1.0
    shape: ShapeModel | None = None
    shape_loc: float = 0.0
    shape_scale: float = 1.0
    trough_loc: float | None = None
    trough_scale: float = 1.0

    @classmethod
    def standard_normal(cls, dim: int) -> DensityModel:
        """One standard-normal component N(0, I) (the density of an untrained model).

        Args:
            dim: Latent dimension D (``ModelSpec.latent_dim``).

        Returns:
            A density with K = 1, uncalibrated (location 0, scale 1 for both score terms).
        """
        return cls(np.ones(1), np.zeros((1, dim)), np.eye(dim)[None].copy())

    @classmethod
    def fit(cls, latents: np.ndarray, n_components: int, seed: int = 0) -> DensityModel:
        """Fit a full-covariance Gaussian mixture to training latents (scikit-learn EM).

        The number of components is ``max(1, min(n_components, N // 20))`` so that every
        component has about 20 spectra or more; ``reg_covar=1e-4`` keeps the covariances
        positive definite. The result is uncalibrated (see :meth:`calibrate`).

        Args:
            latents: Latent vectors of normal training spectra, shape (N, D), any float dtype
                (fitted in float64).
            n_components: Largest number of mixture components K
                (``ModelSpec.density_components``).
            seed: Random state of the k-means initialisation.

        Returns:
            The fitted density (K components, weights/means/precision Cholesky factors).

        Raises:
            ValueError: From scikit-learn when ``latents`` holds NaN or inf or is empty; no
                qso_anomaly error is raised here.
        """
        from sklearn.mixture import GaussianMixture  # training only: keeps scorers light

        k = max(1, min(n_components, latents.shape[0] // 20))
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed,
                              n_init=1, max_iter=200)
        gmm.fit(latents.astype(np.float64))
        return cls(gmm.weights_, gmm.means_, gmm.precisions_cholesky_)

    def nll(self, latents: np.ndarray) -> np.ndarray:
        """Negative log density −log p(l) of each latent vector under the mixture.

        Args:
            latents: Latent vectors, shape (N, D), any float dtype (evaluated in float64).

        Returns:
            −log p(l), shape (N,), float64, in nats (lower = more typical).
        """
        lat = np.asarray(latents, dtype=np.float64)
        d = lat.shape[1]
        diff = lat[:, None, :] - self.means[None]  # (N, K, D)
        y = np.einsum("nkd,kde->nke", diff, self.prec_chol)
        logdet = np.log(np.diagonal(self.prec_chol, axis1=1, axis2=2)).sum(-1)
        logp = np.log(self.weights) - 0.5 * d * np.log(2 * np.pi) + logdet - 0.5 * (y**2).sum(-1)
        m = logp.max(axis=1, keepdims=True)
        return -(m[:, 0] + np.log(np.exp(logp - m).sum(axis=1)))

    def calibrate(self, chi2_dof: np.ndarray, nll: np.ndarray,
                  shape_z: np.ndarray | None = None, trough: np.ndarray | None = None, *,
                  spread: tuple[np.ndarray | None, ...] | None = None) -> None:
        """Set the standardisation (median, 99th percentile − median) from held-out normal data.

        Updates ``chi2_loc``/``chi2_scale`` from log(max(χ²/dof, 1e-6)) and
        ``nll_loc``/``nll_scale`` from −log p in place; non-finite values are ignored, an
        empty or all-non-finite input gives location 0 and scale 1, and a scale never drops
        below 1e-6.

        Args:
            chi2_dof: Reconstruction χ² per valid pixel of held-out normal spectra, shape (N,),
                dimensionless.
            nll: −log p(latent) of the same spectra, shape (N,), in nats.
            shape_z: Shape deviates of the same spectra (:meth:`ShapeModel.zscore`), shape
                (N,); sets ``shape_loc``/``shape_scale`` when given.
            trough: Trough depths of the same spectra
                (:func:`qso_anomaly.models.trough.trough_depth`), shape (N,); sets
                ``trough_loc``/``trough_scale`` when given.
            spread: The same quantities (χ²/dof, −log p, shape deviate or None, and
                optionally the trough depth or None) of a
                larger set to take the scales (99th percentile − median) from, e.g. the
                held-out normals clean and under the instrument states the flag decision is
                calibrated on; the locations stay those of the first arguments. None: both
                from the first arguments.
        """
        lc = np.log(np.maximum(chi2_dof, 1e-6))
        sc = lc if spread is None else np.log(np.maximum(spread[0], 1e-6))
        sn = nll if spread is None else spread[1]
        self.chi2_loc, self.chi2_scale = _robust(lc)[0], _robust(sc)[1]
        self.nll_loc, self.nll_scale = _robust(nll)[0], _robust(sn)[1]
        if shape_z is not None:
            sz = shape_z if spread is None or spread[2] is None else spread[2]
            self.shape_loc = _robust(np.asarray(shape_z, np.float64))[0]
            self.shape_scale = _robust(np.asarray(sz, np.float64))[1]
        if trough is not None:
            st = trough if spread is None or len(spread) < 4 or spread[3] is None else spread[3]
            self.trough_loc = _robust(np.asarray(trough, np.float64))[0]
            self.trough_scale = _robust(np.asarray(st, np.float64))[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The density as named arrays (the ``density.npz`` layout and the torch buffers).

        Returns:
            ``weights`` (K,), ``means`` (K, D), ``prec_chol`` (K, D, D) and ``calib`` (4,) =
            [chi2_loc, chi2_scale, nll_loc, nll_scale]; with a shape model also its arrays
            (``shape_*``, :meth:`ShapeModel.to_arrays`) and ``calib`` (6,) with
            [shape_loc, shape_scale] appended; with the trough term ``calib`` (8,) with
            [shape_loc, shape_scale, trough_loc, trough_scale] appended (the shape pair is
            unused without a shape model).
        """
        calib = [self.chi2_loc, self.chi2_scale, self.nll_loc, self.nll_scale]
        out = {"weights": self.weights, "means": self.means, "prec_chol": self.prec_chol}
        if self.shape is not None or self.trough_loc is not None:
            calib += [self.shape_loc, self.shape_scale]
        if self.shape is not None:
            out.update(self.shape.to_arrays())
        if self.trough_loc is not None:
            calib += [self.trough_loc, self.trough_scale]
        out["calib"] = np.array(calib)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> DensityModel:
        """Inverse of :meth:`to_arrays`.

        Args:
            a: Mapping with the keys ``weights``, ``means``, ``prec_chol`` and ``calib``
                (shapes as in :meth:`to_arrays`).

        Returns:
            The density with its calibration.

        Raises:
            KeyError: When one of the four arrays is missing (a damaged ``density.npz``).
        """
        c = np.asarray(a["calib"], dtype=np.float64)
        shape = ShapeModel.from_arrays(a)
        extra = (float(c[4]), float(c[5])) if shape is not None and c.size >= 6 else (0.0, 1.0)
        trough = (float(c[6]), float(c[7])) if c.size >= 8 else (None, 1.0)
        return cls(np.asarray(a["weights"]), np.asarray(a["means"]), np.asarray(a["prec_chol"]),
                   float(c[0]), float(c[1]), float(c[2]), float(c[3]), shape, *extra, *trough)


#: Quantile of held-out normal values that one unit of a standardised score term reaches
#: (the flag level α = 0.01 of the conformal decision).
TAIL_QUANTILE = 0.99


def _robust(x: np.ndarray) -> tuple[float, float]:
    """(median, q_TAIL − median) of the finite values (location 0, scale 1 when none).

    Every term is scaled by its own upper tail on normal spectra, so that the terms weigh the
    same at the flag level (a term whose normal values have a long tail, such as log χ²/dof,
    is not favoured over a term with a Gaussian tail, such as the shape deviate).
    """
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    q2, qt = np.quantile(x, [0.5, TAIL_QUANTILE])
    return float(q2), float(max(qt - q2, 1e-6))
