import numpy as np
import pytest
import torch

from qso_anomaly.data.synth import generate
from qso_anomaly.errors import ModelError
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.torch_model import build_model, chi2_loss


def test_spec_round_trips_and_has_ci_and_full_sizes() -> None:
    ci, full = ModelSpec.ci(), ModelSpec.full()
    assert ModelSpec.from_dict(ci.to_dict()) == ci
    assert full.channels == (128, 256, 512) and full.grid_downsample == 1
    assert full.input_grid().npix == 7781 and ci.input_grid().npix == 1946
    with pytest.raises(ModelError):
        ModelSpec.from_dict({**ci.to_dict(), "bogus": 1})
    with pytest.raises(ModelError):
        ModelSpec(kernels=(4, 11, 21))


def test_forward_shapes_and_masked_pixels_do_not_matter(ci_grid) -> None:
    spec = ModelSpec.ci()
    torch.manual_seed(0)
    model = build_model(spec, ci_grid).eval()
    b = generate(4, seed=1, grid=ci_grid)
    f, iv, z = (torch.from_numpy(a) for a in (b.flux, b.ivar, b.z))
    recon = model(f, iv, z)
    assert recon.shape == (4, ci_grid.npix)
    f2 = f.clone()
    f2[iv == 0] = 1e6  # garbage in masked pixels
    assert torch.allclose(model(f2, iv, z), recon)
    assert float(chi2_loss(recon, f, iv).detach()) > 0


def test_decoder_output_is_resampled_by_redshift(ci_grid) -> None:
    spec = ModelSpec.ci()
    model = build_model(spec, ci_grid)
    rest = torch.zeros(1, spec.n_rest)
    line = round((1549.06 - spec.rest_start) / spec.rest_step)
    rest[0, line] = 1.0
    obs = model.to_observed(rest, torch.tensor([2.0]))
    peak = ci_grid.wave[int(obs[0].argmax())]
    assert abs(peak - 1549.06 * 3) < 2 * ci_grid.step


def test_gaussian_mixture_nll_matches_sklearn() -> None:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(4, 0.5, (300, 3))])
    d = DensityModel.fit(x, 2, seed=0)
    gm = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, random_state=0).fit(x)
    np.testing.assert_allclose(d.nll(x), -gm.score_samples(x), rtol=1e-6)
