"""The absorption-trough term of the score (``qso_anomaly.models.trough``): a deep, wide
deficit below the reconstruction raises it, noise and masked pixels do not, and NumPy,
PyTorch and JAX agree; models fitted before the term score as before."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from qso_test_support import untrained_model_with_density

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.errors import ModelError
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.jax_model import (
    anomaly_score_jax,
    params_from_torch,
    score_jax,
    trough_depth_jax,
)
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.torch_model import (
    anomaly_score_torch,
    has_trough_term,
    trough_depth_torch,
)
from qso_anomaly.models.trough import NO_TROUGH, trough_depth, window_pixels, window_sums

WIDTHS = ModelSpec.ci().trough_widths


def _flat(ci_grid, n: int, snr: float, seed: int = 0):
    """n flat spectra (flux 10 ± 10/snr per pixel) and their exact reconstruction."""
    rng = np.random.default_rng(seed)
    p = ci_grid.wave.size
    recon = np.full((n, p), 10.0)
    sigma = 10.0 / snr
    flux = recon + rng.normal(0.0, sigma, (n, p))
    ivar = np.full((n, p), 1.0 / sigma**2)
    return flux, ivar, recon


def _trough(ci_grid, flux, lo: float, hi: float, depth: float = 1.0):
    f = flux.copy()
    inside = (ci_grid.wave >= lo) & (ci_grid.wave < hi)
    f[:, inside] *= 1.0 - depth
    return f


def test_window_widths_follow_the_grid(ci_grid) -> None:
    assert window_pixels(ci_grid.wave, WIDTHS) == (8, 16, 32)
    assert window_pixels(WavelengthGrid.desi_edr().wave, WIDTHS) == (32, 64, 128)
    assert window_pixels(ci_grid.wave[:10], (1e4,)) == (10,)
    with pytest.raises(ValueError, match="at least 2"):
        window_pixels(ci_grid.wave[:1], WIDTHS)


def test_a_saturated_trough_is_measured_and_noise_is_not(ci_grid) -> None:
    flux, ivar, recon = _flat(ci_grid, 20, snr=5.0)
    base = trough_depth(flux, ivar, recon, ci_grid.wave, WIDTHS, 3.0)
    assert np.all(base < 0.1)  # a 3σ bound on pure noise: no deficit
    dla = trough_depth(_trough(ci_grid, flux, 4500.0, 4560.0), ivar, recon, ci_grid.wave,
                       WIDTHS, 3.0)
    assert np.all(dla > 0.7)  # a ≥ 70 % deficit, at 3σ
    # the same trough in a spectrum 25× noisier is not significant enough to count as deep
    fl, iv, rc = _flat(ci_grid, 20, snr=0.2)
    faint = trough_depth(_trough(ci_grid, fl, 4500.0, 4560.0), iv, rc, ci_grid.wave,
                         WIDTHS, 3.0)
    assert np.median(faint) < 0.3
    # a shallow deficit in a bright spectrum is significant but shallow
    fl, iv, rc = _flat(ci_grid, 20, snr=200.0)
    shallow = trough_depth(_trough(ci_grid, fl, 4500.0, 4800.0, depth=0.05), iv, rc,
                           ci_grid.wave, WIDTHS, 3.0)
    assert np.all((shallow > 0.03) & (shallow < 0.06))


def test_only_observed_pixels_count(ci_grid) -> None:
    flux, ivar, recon = _flat(ci_grid, 10, snr=5.0)
    base = trough_depth(flux, ivar, recon, ci_grid.wave, WIDTHS, 3.0)
    # a masked block with zero flux is not absorption, whatever the flux there holds
    block = (ci_grid.wave >= 5000.0) & (ci_grid.wave < 5600.0)
    iv = ivar.copy()
    iv[:, block] = 0.0
    for fill in (0.0, -50.0, 1e6):
        f = flux.copy()
        f[:, block] = fill
        masked = trough_depth(f, iv, recon, ci_grid.wave, WIDTHS, 3.0)
        assert np.all(masked <= base + 1e-12)
        np.testing.assert_array_equal(masked, trough_depth(flux, iv, recon, ci_grid.wave,
                                                           WIDTHS, 3.0))
    # nothing observed: no evidence of a trough
    none = trough_depth(flux, np.zeros_like(ivar), recon, ci_grid.wave, WIDTHS, 3.0)
    np.testing.assert_array_equal(none, NO_TROUGH)


def test_numpy_torch_and_jax_agree(ci_grid) -> None:
    rng = np.random.default_rng(5)
    flux, ivar, recon = _flat(ci_grid, 64, snr=3.0)
    flux = _trough(ci_grid, flux, 6000.0, 6100.0, depth=0.8)
    recon = recon * rng.uniform(0.5, 2.0, (64, 1))
    ivar = ivar * (rng.uniform(size=ivar.shape) > 0.1)  # 10 % of pixels unobserved
    ref = trough_depth(flux, ivar, recon, ci_grid.wave, WIDTHS, 3.0)
    wp = window_pixels(ci_grid.wave, WIDTHS)
    f32 = [a.astype(np.float32) for a in (flux, ivar, recon)]
    t = trough_depth_torch(*map(torch.from_numpy, f32), wp, 3.0).numpy()
    j = np.asarray(trough_depth_jax(*map(jnp.asarray, f32), wp, 3.0))
    np.testing.assert_allclose(t, ref, atol=1e-4)
    np.testing.assert_allclose(j, ref, atol=1e-4)


@pytest.fixture(scope="module")
def with_trough(ci_grid):
    return untrained_model_with_density(ci_grid, trough_calib=(0.15, 0.5))


def test_the_score_adds_the_term_and_frameworks_agree(with_trough, ci_grid) -> None:
    spec, model, batch = with_trough
    assert has_trough_term(model)
    plain = untrained_model_with_density(ci_grid)[1]
    assert not has_trough_term(plain)  # a model calibrated without it (qso-ae-2.1 and older)
    model.eval()
    with torch.no_grad():
        recon = model.forward_parts(torch.from_numpy(batch.flux), torch.from_numpy(batch.ivar),
                                    torch.from_numpy(batch.z))[0]
    term = trough_depth_torch(torch.from_numpy(batch.flux), torch.from_numpy(batch.ivar),
                              recon, model.trough_pixels, spec.trough_sigma).numpy()
    expected = score_torch(plain, batch).score + (term - 0.15) / 0.5
    rt = score_torch(model, batch)
    np.testing.assert_allclose(rt.score, expected, rtol=1e-5, atol=1e-4)
    params = params_from_torch(model)
    rj = score_jax(params, spec, ci_grid, batch)
    np.testing.assert_allclose(rj.score, rt.score, atol=1e-3)
    # gradients (what Integrated Gradients uses) agree too
    fl, iv, z = batch.flux[:8], batch.ivar[:8], batch.z[:8]
    ft = torch.from_numpy(fl).requires_grad_(True)
    anomaly_score_torch(model, ft, torch.from_numpy(iv), torch.from_numpy(z)).sum().backward()
    gj = jax.grad(lambda f: anomaly_score_jax(params, spec, ci_grid, f, iv, z).sum())(
        jnp.asarray(fl))
    gt = ft.grad.numpy()
    assert np.abs(np.asarray(gj) - gt).max() <= 1e-3 * max(1.0, float(np.abs(gt).max()))


def test_calibration_round_trips_with_and_without_the_shape_term() -> None:
    d = DensityModel.standard_normal(4)
    assert d.to_arrays()["calib"].shape == (4,)
    d.trough_loc, d.trough_scale = 0.2, 0.4
    a = d.to_arrays()
    assert a["calib"].shape == (8,)
    back = DensityModel.from_arrays(a)
    assert back.shape is None and (back.trough_loc, back.trough_scale) == (0.2, 0.4)
    d.calibrate(np.ones(100), np.zeros(100), None, np.linspace(0.0, 1.0, 101)[:100],
                spread=(np.ones(100), np.zeros(100), None, np.linspace(0.0, 2.0, 100)))
    assert d.trough_loc == pytest.approx(np.median(np.linspace(0.0, 1.0, 101)[:100]))
    assert d.trough_scale == pytest.approx(np.quantile(np.linspace(0.0, 2.0, 100), 0.99)
                                           - np.median(np.linspace(0.0, 2.0, 100)))


def test_the_spec_refuses_widths_that_cannot_work() -> None:
    with pytest.raises(ModelError, match="trough_widths"):
        ModelSpec.ci().with_(trough_widths=())
    with pytest.raises(ModelError, match="trough_widths"):
        ModelSpec.ci().with_(trough_widths=(25.6, 0.0))
    assert ModelSpec.ci().with_(trough_weight=0.0, trough_widths=()).trough_widths == ()
    again = ModelSpec.from_dict(ModelSpec.ci().to_dict())
    assert again.trough_widths == WIDTHS and again == ModelSpec.ci()


@pytest.mark.parametrize("widths", [(1,), (8, 16, 32), (3, 5, 7, 13), (37,), (40,)])
def test_window_sums_equal_direct_sums(widths) -> None:
    x = np.random.default_rng(9).normal(size=(3, 2, 40))
    got = window_sums(x, widths)
    for w in widths:
        direct = np.stack([x[..., i:i + w].sum(-1) for i in range(40 - w + 1)], -1)
        np.testing.assert_allclose(got[w], direct, atol=1e-12)
