"""TrainedModel: weights + latent density + spec + grid + metrics + reference scores + the
Mondrian calibration set (``calibration.npz``; absent in models saved before it existed, which
then decide against the pooled reference scores).

The weights are saved twice: ``model.pt`` (the torch state dict, what PyTorch and MLflow load)
and ``weights.npz`` (the same arrays in NumPy's format), so a JAX scorer loads a model without
importing PyTorch (1.0 s of every JAX Ray actor's start-up; issue 15). Models saved before
``weights.npz`` existed load through ``model.pt``. ``model.pt`` is the model: ``weights.npz``
records the SHA-256 of the ``model.pt`` it copies, and one that is unreadable, records no
digest or another file's (``model.pt`` replaced afterwards, ``weights.npz`` copied from another
model) is not used: the loader reads ``model.pt`` instead (with a warning).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qso_anomaly import __version__
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.errors import ModelError
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.registry.tracking import file_sha256
from qso_anomaly.train.mondrian import MondrianCalibration

if TYPE_CHECKING:
    from qso_anomaly.models.torch_model import QsoAutoencoder

FILES = ("spec.json", "grid.json", "model.pt", "density.npz", "reference_scores.npy",
         "metrics.json")
#: Optional file: the stratified calibration set (:class:`MondrianCalibration`).
CALIBRATION_FILE = "calibration.npz"
#: Optional file: the weights of ``model.pt`` as NumPy arrays (loaded without PyTorch).
WEIGHTS_FILE = "weights.npz"
#: Entry of ``weights.npz`` holding the SHA-256 (hex) of the ``model.pt`` it copies.
WEIGHTS_DIGEST_KEY = "__model_pt_sha256__"


def _numpy_weights(directory: Path) -> dict[str, np.ndarray] | None:
    """The state dict from ``weights.npz`` when it is the copy of this ``model.pt``, else None.

    None (with a :class:`UserWarning` saying why) for a ``weights.npz`` that cannot be read,
    records no digest of ``model.pt`` or another file's; None without a warning when the
    directory has no ``weights.npz`` (a model saved before it existed).
    """
    path = directory / WEIGHTS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        why = f"cannot be read ({type(exc).__name__}: {exc})"
    else:
        digest = state.pop(WEIGHTS_DIGEST_KEY, None)
        if digest is not None and str(digest) == file_sha256(directory / "model.pt"):
            return state
        why = ("records no digest of model.pt (saved before weights.npz recorded one)"
               if digest is None else "is not the copy of this model.pt (another model's weights)")
    warnings.warn(f"{path} {why}: loading the weights from model.pt", UserWarning, stacklevel=3)
    return None


def _numpy(value: Any) -> np.ndarray:
    """A state-dict entry (torch tensor or NumPy array) as a NumPy array (a view on CPU)."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


@dataclass
class TrainedModel:
    spec: ModelSpec
    grid: WavelengthGrid
    #: torch state dict: torch tensors, or NumPy arrays when loaded with ``torch_weights=False``
    state_dict: dict[str, Any]
    density: DensityModel
    metrics: dict[str, Any] = field(default_factory=dict)
    reference_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    calibration: MondrianCalibration | None = None

    def flag_calibration(self) -> MondrianCalibration:
        """The calibration every flag decision uses: the stratified set, or for a model
        without one the pooled ``reference_scores`` (split conformal)."""
        if self.calibration is not None:
            return self.calibration
        return MondrianCalibration.pooled(self.reference_scores)

    def torch_model(self) -> QsoAutoencoder:
        """The autoencoder with these weights and this latent density, in eval mode (CPU).

        Returns:
            A :class:`~qso_anomaly.models.torch_model.QsoAutoencoder`.

        Raises:
            ModelError: When the weights do not fit the spec's architecture on the grid.
        """
        import torch

        from qso_anomaly.models.torch_model import build_model

        model = build_model(self.spec, self.grid)
        model.set_density(self.density)
        try:
            model.load_state_dict({k: torch.as_tensor(v) for k, v in self.state_dict.items()})
        except RuntimeError as exc:  # missing, unexpected or differently shaped weights
            raise ModelError(
                f"the weights do not fit the architecture of spec {self.spec.version!r} on a "
                f"{self.grid.npix}-pixel grid: {str(exc).splitlines()[0]}",
                hint="spec.json, grid.json and model.pt must come from one saved model; "
                     "re-save it with TrainedModel.save or retrain",
            ) from exc
        model.eval()
        return model

    def jax_params(self) -> dict[str, Any]:
        """The weights and latent density as JAX params (no PyTorch import when the state dict
        holds NumPy arrays: :func:`~qso_anomaly.models.jax_model.params_from_state`)."""
        from qso_anomaly.models.jax_model import params_from_state

        return params_from_state({k: _numpy(v) for k, v in self.state_dict.items()}, self.spec)

    def save(self, directory: str | Path) -> Path:
        """Write the model directory: a complete copy in ``<dir>.tmp``, then renames.

        An existing model is moved to ``<dir>.old`` and deleted only once the new one is in
        place, so an interrupt leaves the old or the new model whole (between the two renames,
        the old one at ``<dir>.old``), never a partial one at ``<dir>``.

        Args:
            directory: The model directory to write (replaced if it exists).

        Returns:
            ``directory`` as a path.
        """
        out = Path(directory)
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "spec.json").write_text(json.dumps(self.spec.to_dict(), indent=2))
        (tmp / "grid.json").write_text(json.dumps(self.grid.to_dict(), indent=2))
        import torch

        torch.save({k: torch.as_tensor(v) for k, v in self.state_dict.items()}, tmp / "model.pt")
        weights = {k: _numpy(v) for k, v in self.state_dict.items()}
        weights[WEIGHTS_DIGEST_KEY] = np.array(file_sha256(tmp / "model.pt"))
        np.savez(tmp / WEIGHTS_FILE, **weights)  # type: ignore[arg-type]
        np.savez(tmp / "density.npz", **self.density.to_arrays())  # type: ignore[arg-type]
        np.save(tmp / "reference_scores.npy", np.asarray(self.reference_scores, np.float32))
        if self.calibration is not None:
            np.savez(tmp / CALIBRATION_FILE, **self.calibration.to_arrays())  # type: ignore[arg-type]
        meta = {**self.metrics, "qso_anomaly_version": __version__}
        (tmp / "metrics.json").write_text(json.dumps(meta, indent=2, default=float))
        if out.exists():  # the old model stays whole until the new one is in place
            old = out.with_name(out.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, directory: str | Path, *, torch_weights: bool = True) -> TrainedModel:
        """Load a model directory written by :meth:`save`.

        Args:
            directory: The model directory.
            torch_weights: Load ``model.pt`` as torch tensors; ``False`` reads ``weights.npz``
                as NumPy arrays without importing PyTorch (falls back to ``model.pt`` for a
                model saved without it, and with a warning for one whose ``weights.npz`` is
                unreadable or not the copy of its ``model.pt``).

        Returns:
            The model.

        Raises:
            ModelError: When a required file is missing.
        """
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).exists()]
        if missing:
            raise ModelError(
                f"{d} is not a trained-model directory (missing {missing})",
                hint="train with `qso_anomaly.train.fit(...)` and `.save(dir)` first",
            )
        spec = ModelSpec.from_dict(json.loads((d / "spec.json").read_text()))
        grid = WavelengthGrid.from_dict(json.loads((d / "grid.json").read_text()))
        state: dict[str, Any] | None = None if torch_weights else _numpy_weights(d)
        if state is None:
            import torch

            state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
        with np.load(d / "density.npz") as z:
            density = DensityModel.from_arrays({k: z[k] for k in z.files})
        calibration = None
        if (d / CALIBRATION_FILE).exists():
            with np.load(d / CALIBRATION_FILE) as z:
                calibration = MondrianCalibration.from_arrays({k: z[k] for k in z.files})
        return cls(
            spec=spec,
            grid=grid,
            state_dict=state,
            density=density,
            metrics=json.loads((d / "metrics.json").read_text()),
            reference_scores=np.load(d / "reference_scores.npy"),
            calibration=calibration,
        )


def as_trained(model: TrainedModel | str | Path, *, torch_weights: bool = True) -> TrainedModel:
    """``model`` itself, or the model loaded from a directory (:meth:`TrainedModel.load`)."""
    if isinstance(model, TrainedModel):
        return model
    return TrainedModel.load(model, torch_weights=torch_weights)
