import json

import numpy as np
import pytest
import torch
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.errors import ModelError
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.train import TrainedModel, fit


def test_local_fit_lowers_the_loss_and_calibrates_scores(tmp_path, ci_grid) -> None:
    paths = write_survey(tmp_path / "train", n=240, seed=3, shard_size=120, grid=ci_grid)
    tm = fit(TINY, ci_grid, paths, use_ray=False, epochs=3, seed=0)
    hist = tm.metrics["loss_history"]
    assert len(hist) == 3 and hist[-1] < hist[0]
    assert tm.metrics["n_train"] + 60 == 240  # 25 % held out for calibration
    # reference scores are standardised: centred near 0 on held-out normal spectra
    assert abs(float(np.median(tm.reference_scores))) < 1.5
    assert len(tm.metrics["templates_sha256"]) == 7

    tm.save(tmp_path / "model")
    back = TrainedModel.load(tmp_path / "model")
    assert back.spec == TINY and back.grid == ci_grid
    b = generate(16, seed=9, grid=ci_grid)
    np.testing.assert_allclose(score_torch(back.torch_model(), b).score,
                               score_torch(tm.torch_model(), b).score, rtol=1e-6)
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["epochs"] == 3


def test_jax_training_backend_produces_a_usable_torch_model(ci_grid) -> None:
    batch = generate(160, seed=5, grid=ci_grid)
    tm = fit(TINY, ci_grid, batch, framework="jax", epochs=2, seed=1)
    assert tm.metrics["backend"] == "local_jax" and len(tm.metrics["loss_history"]) == 2
    model = tm.torch_model()
    with torch.no_grad():
        rec = model(torch.from_numpy(batch.flux[:2]), torch.from_numpy(batch.ivar[:2]),
                    torch.from_numpy(batch.z[:2]))
    assert torch.isfinite(rec).all()


def test_fit_rejects_data_on_another_grid_and_missing_model_dirs(tmp_path, ci_grid) -> None:
    from qso_anomaly.data.grid import WavelengthGrid

    other = generate(60, seed=1, grid=WavelengthGrid.desi_edr().downsample(8))
    with pytest.raises(ModelError, match="px"):
        fit(TINY, ci_grid, other, epochs=1)
    with pytest.raises(ModelError, match="not a trained-model directory"):
        TrainedModel.load(tmp_path)
