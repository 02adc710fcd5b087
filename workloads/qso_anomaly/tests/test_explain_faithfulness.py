"""Faithfulness metrics on a linear (PCA) autoencoder where the injected feature is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from qso_anomaly.explain import (
    integrated_gradients_torch,
    localisation,
    localisation_batch,
    occlusion,
    perturbation_curves,
    randomisation_check,
    randomise_jax_params,
    randomise_torch_module,
    summarise_localisation,
)
from qso_anomaly.explain.faithfulness import average_precision, pixel_auroc
from qso_anomaly.explain.windows import artefact_mass_fraction, line_window_mass

pytestmark = pytest.mark.unit

P = 256
RANK = 4


def _spectra(rng: np.random.Generator, n: int) -> np.ndarray:
    grid = np.linspace(0.0, 1.0, P)
    amp = rng.uniform(0.5, 1.5, size=(n, 3))
    base = (amp[:, :1] * (1.0 + 0.5 * grid)[None, :]
            + amp[:, 1:2] * np.exp(-0.5 * ((grid - 0.3) / 0.02) ** 2)[None, :]
            + amp[:, 2:3] * np.exp(-0.5 * ((grid - 0.7) / 0.03) ** 2)[None, :])
    return (base + rng.normal(scale=0.02, size=(n, P))).astype(np.float32)


class LinearAE(torch.nn.Module):
    """x -> x V V^T (a PCA autoencoder), score = ivar-weighted chi2 per pixel."""

    def __init__(self, components: np.ndarray) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(P, RANK, bias=False)
        self.dec = torch.nn.Linear(RANK, P, bias=False)
        with torch.no_grad():
            self.enc.weight.copy_(torch.as_tensor(components))
            self.dec.weight.copy_(torch.as_tensor(components.T))

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(flux))

    def score(self, flux: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
        return (ivar * (flux - self(flux)) ** 2).mean(dim=1)


@pytest.fixture(scope="module")
def setup() -> dict[str, object]:
    rng = np.random.default_rng(7)
    train = _spectra(rng, 400)
    _, _, vt = np.linalg.svd(train, full_matrices=False)
    model = LinearAE(vt[:RANK].astype(np.float32)).eval()
    x = _spectra(rng, 24)
    truth = np.zeros_like(x, dtype=bool)
    labels = np.array(["trough"] * 12 + ["spike"] * 12)
    for i in range(24):
        if labels[i] == "trough":
            s = rng.integers(20, P - 60)
            width = rng.integers(12, 30)
            x[i, s : s + width] *= 0.4
        else:
            s = rng.integers(10, P - 10)
            width = 3
            x[i, s : s + width] += 3.0
        truth[i, s : s + width] = True
    ivar = np.full_like(x, 1.0 / 0.02**2)
    ivar[0, 5:9] = 0.0
    with torch.no_grad():
        recon = model(torch.as_tensor(x)).numpy()
    return {"model": model, "x": x, "truth": truth, "labels": labels, "ivar": ivar,
            "recon": recon, "valid": ivar > 0}


def _ig(model: LinearAE, s: dict[str, object]) -> np.ndarray:
    x, ivar, valid = s["x"], s["ivar"], s["valid"]
    with torch.no_grad():
        recon = model(torch.as_tensor(x)).numpy()
    res = integrated_gradients_torch(model.score, x, recon, extras=(ivar,), valid=valid,
                                     n_steps=16)
    return res.values


def test_pixel_auroc_and_ap_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.1
    attr = rng.normal(size=300) + 1.5 * truth
    assert pixel_auroc(attr, truth) == pytest.approx(roc_auc_score(truth, attr), abs=1e-9)
    assert average_precision(attr, truth) == pytest.approx(
        average_precision_score(truth, attr), abs=1e-9)
    assert np.isnan(pixel_auroc(attr, np.zeros(300, dtype=bool)))


def test_localisation_of_a_perfect_and_an_inverted_map() -> None:
    truth = np.zeros(100, dtype=bool)
    truth[40:50] = True
    perfect = truth.astype(float)
    loc = localisation(perfect, truth)
    assert loc.auroc == 1.0 and loc.relevance_mass == 1.0 and loc.relevance_rank == 1.0
    assert loc.pointing_game == 1.0 and loc.mask_fraction == pytest.approx(0.1)
    inverted = localisation(-perfect, truth)
    assert inverted.auroc == 0.0 and inverted.pointing_game == 0.0
    assert localisation(-perfect, truth, use_abs=True).auroc == 1.0


def test_ig_on_trained_model_localises_injected_features(setup: dict[str, object]) -> None:
    attr = _ig(setup["model"], setup)  # type: ignore[arg-type]
    rows = localisation_batch(attr, setup["truth"], setup["valid"])  # type: ignore[arg-type]
    summary = summarise_localisation(rows, setup["labels"])  # type: ignore[arg-type]
    assert set(summary) == {"trough", "spike"}
    for cls in ("trough", "spike"):
        assert summary[cls]["localised"] is True
        assert summary[cls]["auroc_mean"] >= 0.85, summary[cls]
        assert summary[cls]["n_with_mask"] == 12


def test_occlusion_localises_injected_features(setup: dict[str, object]) -> None:
    model: LinearAE = setup["model"]  # type: ignore[assignment]

    def score(f: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.score(torch.as_tensor(f), torch.as_tensor(ivar)).numpy()

    res = occlusion(score, setup["x"], setup["recon"], window=8, extras=(setup["ivar"],),
                    valid=setup["valid"])  # type: ignore[arg-type]
    rows = localisation_batch(res.values, setup["truth"], setup["valid"])  # type: ignore[arg-type]
    aurocs = np.array([r.auroc for r in rows])
    assert np.nanmean(aurocs) >= 0.85


def test_deletion_beats_random_order_and_insertion_too(setup: dict[str, object]) -> None:
    model: LinearAE = setup["model"]  # type: ignore[assignment]
    attr = _ig(model, setup)

    def score(f: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.score(torch.as_tensor(f), torch.as_tensor(ivar)).numpy()

    curves = perturbation_curves(score, setup["x"], setup["recon"], attr,
                                 valid=setup["valid"], extras=(setup["ivar"],), window=8,
                                 n_steps=8, batch_size=50)  # type: ignore[arg-type]
    assert curves.deletion.shape == (24, 9)
    np.testing.assert_allclose(curves.deletion[:, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(curves.insertion[:, 0], 0.0, atol=1e-5)
    summary = curves.summary()
    assert summary["n"] == 24
    assert summary["deletion_auc_mean"] < summary["deletion_auc_random_mean"] - 0.2
    assert summary["insertion_auc_mean"] > summary["insertion_auc_random_mean"] + 0.2


def test_randomisation_check_detects_weight_sensitive_and_insensitive_methods(
    setup: dict[str, object],
) -> None:
    model: LinearAE = setup["model"]  # type: ignore[assignment]
    randomised = randomise_torch_module(model, seed=3)
    assert not torch.allclose(randomised.enc.weight, model.enc.weight)
    attr = _ig(model, setup)
    attr_rand = _ig(randomised, setup)
    check = randomisation_check(attr, attr_rand, valid=setup["valid"],
                                truth=setup["truth"])  # type: ignore[arg-type]
    assert check.passed, check
    assert check.localisation_auroc_trained is not None
    assert check.localisation_auroc_randomised is not None
    assert check.localisation_auroc_trained > check.localisation_auroc_randomised
    # An "explanation" that ignores the model (flux minus a fixed mean) is identical for both
    # models: the sanity check must flag it.
    x = setup["x"]
    model_free = x - x.mean(axis=0, keepdims=True)  # type: ignore[union-attr]
    bad = randomisation_check(model_free, model_free.copy())
    assert not bad.passed
    assert bad.spearman_abs_mean == pytest.approx(1.0)


def test_randomise_jax_params_changes_every_float_leaf() -> None:
    params = {"w": np.ones((3, 4), dtype=np.float32) * np.arange(4), "b": np.zeros(4),
              "n": np.array([1, 2], dtype=np.int32)}
    new = randomise_jax_params(params, seed=0)
    assert not np.allclose(new["w"], params["w"]) and not np.allclose(new["b"], params["b"])
    np.testing.assert_array_equal(new["n"], params["n"])
    assert new["w"].shape == (3, 4)


def test_line_window_and_artefact_mass() -> None:
    wave = np.linspace(3600.0, 9824.0, 2000)
    attr = np.zeros_like(wave)
    civ = 1549.1 * 3.0
    attr[np.abs(wave - civ) < 10] = 1.0
    mass = line_window_mass(attr, wave, z=2.0)
    assert mass["CIV"] == pytest.approx(1.0)
    assert mass["continuum"] == pytest.approx(0.0)
    sky = np.zeros((2, wave.size))
    sky[0, np.abs(wave - 5578.9) < 3] = 1.0
    sky[1, np.abs(wave - 4500.0) < 3] = 1.0
    frac = artefact_mass_fraction(sky, wave)
    assert frac[0] == pytest.approx(1.0) and frac[1] == pytest.approx(0.0)


def test_select_indices_top_k_plus_per_class() -> None:
    from qso_anomaly.explain.runner import ExplainConfig, select_indices

    scores = np.array([9.0, 8.0, 7.0, 1.0, 0.5, 0.2])
    labels = np.array(["normal", "star", "star", "hibal", "dla", "normal"])
    top = select_indices(scores, labels, ExplainConfig(top_k=2))
    assert top.tolist() == [0, 1]
    both = select_indices(scores, labels, ExplainConfig(top_k=2, per_class=1))
    assert both.tolist() == [0, 1, 4, 3]  # star already in; one dla, one hibal; no normals
    only = select_indices(scores, labels, ExplainConfig(top_k=0, per_class=2))
    assert sorted(only.tolist()) == [1, 2, 3, 4]
