"""Training steps of a pipeline run: pick the model spec, connect to Ray, train on a survey.

:mod:`qso_anomaly.pipeline` orders these steps; each one is usable on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.train.trained import TrainedModel

#: Object store of the private local Ray a pipeline run starts (MiB → bytes).
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def select_spec(full_model: bool = False) -> tuple[ModelSpec, WavelengthGrid]:
    """The model spec of a run and the wavelength grid its input lives on.

    Args:
        full_model: ``True`` for the GPU-size spec (:meth:`ModelSpec.full`, native 0.8 Å grid),
            ``False`` for the CI spec (:meth:`ModelSpec.ci`, 4× downsampled grid, small
            channels; reference ``spectra-and-models.md`` §8.2 "CI size").

    Returns:
        ``(spec, grid)``; ``grid.wave`` is the observed-frame vacuum wavelength in Å, shape
        ``(P,)``.
    """
    from qso_anomaly.models.spec import ModelSpec

    spec = ModelSpec.full() if full_model else ModelSpec.ci()
    return spec, spec.input_grid()


def connect_ray(address: str | None = None, num_workers: int = 1) -> None:
    """Connect this process to Ray once (no-op when it already is).

    ``address`` wins; otherwise :func:`qso_anomaly.train.ray_train.ensure_ray` connects to
    ``RAY_ADDRESS`` (inside a Ray job) or starts a private local Ray on 127.0.0.1 with
    ``max(2, num_workers)`` CPUs and a 256 MiB object store (reference
    ``spectra-and-models.md`` §10.1, CI ``ray.init``).

    Args:
        address: Ray address for ``ray.init`` (``None``: ``RAY_ADDRESS`` or a local Ray).
        num_workers: Ray Train workers the run will ask for (sizes the local Ray's CPUs).
    """
    import ray

    from qso_anomaly.train.ray_train import ensure_ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return
    ensure_ray(num_cpus=max(2, num_workers), object_store_memory=LOCAL_OBJECT_STORE_BYTES)


def train_on_survey(
    spec: ModelSpec,
    grid: WavelengthGrid,
    out: str | Path,
    *,
    n_train: int,
    seed: int,
    epochs: int,
    anomaly_fraction: float = 0.02,
    shard_size: int = 500,
    framework: Literal["torch", "jax"] = "torch",
    use_ray: bool = False,
    ray_address: str | None = None,
    num_workers: int = 1,
    use_gpu: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[TrainedModel, list[Path]]:
    """Write a synthetic ``qso-inject-v1`` training survey and train a model on it.

    The survey goes to ``out/data/train`` (Parquet shards + ``manifest.json``), the trained
    model to ``out/model/trained``.

    Args:
        spec: Model spec to train.
        grid: Input grid (wavelengths in Å); the survey is drawn on the native 0.8 Å grid and
            rebinned onto it by inverse-variance weighting.
        out: Run directory.
        n_train: Number of training spectra (a quarter is held out for calibration).
        seed: Generator and training seed.
        epochs: Training epochs.
        anomaly_fraction: Share of injected anomalies in the training survey (0–1).
        shard_size: Spectra per Parquet shard.
        framework: ``"torch"`` or ``"jax"``.
        use_ray: Train with Ray Train (connects through :func:`connect_ray` first).
        ray_address: Ray address for :func:`connect_ray`.
        num_workers: Ray Train workers.
        use_gpu: Ray Train workers on GPUs.
        log: Progress messages (default: none).

    Returns:
        ``(trained model, training shard paths)``.

    Raises:
        DataError: The training shards cannot be read.
        ModelError: The spec is invalid or training produced no usable model.
    """
    from qso_anomaly.data.synth import write_survey
    from qso_anomaly.train.fitting import fit

    root = Path(out)
    shards = write_survey(root / "data" / "train", n_train, seed, shard_size=shard_size,
                          grid=grid, anomaly_fraction=anomaly_fraction)
    if log is not None:
        log(f"training on {n_train} spectra ({epochs} epochs, framework={framework}, "
            f"ray={use_ray})")
    if use_ray:
        connect_ray(ray_address, num_workers)
    trained = fit(spec, grid, shards, use_ray=use_ray, num_workers=num_workers,
                  use_gpu=use_gpu, epochs=epochs, seed=seed, framework=framework)
    trained.save(root / "model" / "trained")
    return trained, shards
