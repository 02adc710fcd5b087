"""Helpers shared by the qso_anomaly tests."""

from qso_anomaly.models.spec import ModelSpec

#: A tiny spec so that tests train in seconds on 2 shared CPU cores.
TINY = ModelSpec.ci().with_(channels=(4, 8, 8), decoder_mlp=(16, 32), n_rest=512,
                            encoder_mlp=(16,), latent_dim=4, density_components=2,
                            batch_size=32)


def write_desi_healpix(directory, n: int, seed: int, *, n_zwarn: int = 0, healpix: int = 9000,
                       anomaly_fraction: float = 0.0):  # type: ignore[no-untyped-def]
    """A DESI-layout healpix directory: ``coadd-main-dark-<hpix>.fits`` (b/r/z arms on the
    native 0.8 Å grid) and ``redrock-main-dark-<hpix>.fits`` with ``ZWARN = 4`` for the first
    ``n_zwarn`` targets. Returns the synthetic batch the files were written from."""
    from pathlib import Path

    import numpy as np

    from qso_anomaly.data.fits_io import desi_arm_waves, write_desi_coadd, write_redrock
    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.data.synth import generate

    native = WavelengthGrid.desi_edr()
    b = generate(n, seed, native, anomaly_fraction=anomaly_fraction)
    arms = {}
    for arm, wave in desi_arm_waves().items():
        idx = native.index_of(wave)
        arms[arm] = (wave, b.flux[:, idx].copy(), b.ivar[:, idx].copy(),
                     b.mask[:, idx].astype(int))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_desi_coadd(d / f"coadd-main-dark-{healpix}.fits", b.targetid, arms)
    zwarn = np.zeros(len(b), np.int64)
    zwarn[:n_zwarn] = 4
    write_redrock(d / f"redrock-main-dark-{healpix}.fits", b.targetid, b.z.astype(float),
                  zwarn=zwarn)
    return b


def untrained_model_with_density(grid, shape=None, shape_calib=(0.2, 1.3),  # type: ignore[no-untyped-def]
                                 trough_calib=None):
    """An untrained CI-spec model (seed 3) with a latent density fitted on 96 spectra (30 %
    anomalies) and a fixed score calibration; with ``shape``, that broad-band shape model and
    its (loc, scale) too; with ``trough_calib`` (loc, scale), the absorption-trough term.
    Returns ``(spec, model, batch)`` (the parity tests' setup)."""
    import torch

    from qso_anomaly.data.synth import generate
    from qso_anomaly.models.density import DensityModel
    from qso_anomaly.models.torch_model import build_model

    spec = ModelSpec.ci()
    torch.manual_seed(3)
    model = build_model(spec, grid)
    batch = generate(96, seed=4, grid=grid, anomaly_fraction=0.3)
    with torch.no_grad():
        lat = model.encode(torch.from_numpy(batch.flux), torch.from_numpy(batch.ivar),
                           torch.from_numpy(batch.z)).numpy()
    dens = DensityModel.fit(lat, 3, seed=0)
    dens.chi2_loc, dens.chi2_scale, dens.nll_loc, dens.nll_scale = 1.0, 0.7, -5.0, 3.0
    if shape is not None:
        dens.shape, (dens.shape_loc, dens.shape_scale) = shape, shape_calib
    if trough_calib is not None:
        dens.trough_loc, dens.trough_scale = trough_calib
    model.set_density(dens)
    return spec, model, batch
