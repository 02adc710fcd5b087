"""Explanations on the real autoencoder (untrained weights: what matters here is the plumbing,
Captum-vs-JAX parity and that the sanity checks run on the actual architecture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qso_anomaly.data.synth import generate
from qso_anomaly.data.validate import clean_batch
from qso_anomaly.explain import integrated_gradients_jax, integrated_gradients_torch, valid_pixels
from qso_anomaly.explain.runner import ExplainConfig, ExplanationSet, TorchScorer, explain
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.torch_model import anomaly_score_torch, build_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def setup() -> dict:
    torch.manual_seed(0)
    spec = ModelSpec.ci()
    grid = spec.input_grid()
    model = build_model(spec, grid)
    model.set_density(DensityModel.standard_normal(spec.latent_dim))
    model.eval()
    batch, _ = clean_batch(generate(40, 3, grid, anomaly_fraction=0.6))
    return {"spec": spec, "grid": grid, "model": model, "batch": batch}


def test_ig_torch_and_jax_agree_on_the_real_model(setup: dict) -> None:
    from qso_anomaly.models.jax_model import anomaly_score_jax, params_from_torch

    model, b = setup["model"], setup["batch"].take(slice(0, 2))
    with torch.no_grad():
        recon = model(torch.from_numpy(b.flux), torch.from_numpy(b.ivar),
                      torch.from_numpy(b.z)).numpy()
    valid = valid_pixels(b.mask, b.ivar, b.flux.shape)
    res_t = integrated_gradients_torch(
        lambda f, iv, z: anomaly_score_torch(model, f, iv, z), b.flux, recon,
        extras=(b.ivar, b.z), valid=valid, n_steps=8)
    params = params_from_torch(model)
    spec, grid = setup["spec"], setup["grid"]
    res_j = integrated_gradients_jax(
        lambda f, iv, z: anomaly_score_jax(params, spec, grid, f, iv, z), b.flux, recon,
        extras=(b.ivar, b.z), valid=valid, n_steps=8, steps_per_chunk=4)
    scale = np.abs(res_t.values).max()
    assert scale > 0
    np.testing.assert_allclose(res_j.values, res_t.values, atol=2e-3 * scale, rtol=0)
    np.testing.assert_allclose(res_j.delta_score, res_t.delta_score, rtol=1e-3, atol=1e-3)


def test_runner_report_on_the_real_model(setup: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, b, grid = setup["model"], setup["batch"], setup["grid"]
    with torch.no_grad():
        scores = anomaly_score_torch(model, torch.from_numpy(b.flux), torch.from_numpy(b.ivar),
                                     torch.from_numpy(b.z)).numpy()
    cfg = ExplainConfig(top_k=2, per_class=1, ig_steps=8, occlusion_window=64,
                        deletion_window=64, deletion_steps=4)
    ex = explain(TorchScorer(model, anomaly_score_torch), flux=b.flux, ivar=b.ivar, mask=b.mask,
                 z=b.z, scores=scores, wave=grid.wave, targetid=b.targetid, labels=b.label,
                 truth_mask=b.truth_mask, snr=b.snr, cfg=cfg)
    rep = ex.report
    n_classes = len(set(b.label.tolist()) - {"normal"})
    assert n_classes <= rep["n_explained"] <= n_classes + 2
    assert ex.ig.shape == (rep["n_explained"], grid.npix)
    assert np.all(ex.ig[~valid_pixels(ex.ivar == 0, ex.ivar, ex.ig.shape)] == 0)
    for key in ("deletion_auc_mean", "deletion_auc_random_mean", "per_class", "randomisation",
                "localisation_definition", "curves", "artefact_mass_fraction_mean"):
        assert key in rep, key
    assert rep["randomisation"]["passed"] in (True, False)
    assert 0.0 <= rep["randomisation"]["spearman_abs_mean"] <= 1.0
    paths = ex.save(tmp_path)
    back = ExplanationSet.load(tmp_path)
    np.testing.assert_array_equal(back.ig, ex.ig)
    assert back.report["n_explained"] == rep["n_explained"]
    assert paths["report"].endswith("xai_report.json")
