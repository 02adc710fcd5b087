"""Real Ray runs on tiny data: Ray Train (TorchTrainer, 2 CPU workers), JAX in a Ray actor,
Ray Data scoring (actor pool) with resume. One Ray session for the whole module."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.score import output_path, score_shards
from qso_anomaly.train import fit

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=2,
             include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained_with_ray_train(ray_session, ci_grid, tmp_path_factory):
    batch = generate(192, seed=1, grid=ci_grid)
    storage = tmp_path_factory.mktemp("ray-storage")
    return fit(TINY, ci_grid, batch, use_ray=True, num_workers=2, epochs=2, seed=0,
               ray_storage=storage)


def test_torch_trainer_with_two_workers(trained_with_ray_train) -> None:
    m = trained_with_ray_train.metrics
    assert m["backend"] == "ray_train" and m["world_size"] == 2
    assert len(m["loss_history"]) == 2 and np.isfinite(m["loss_history"]).all()
    assert np.isfinite(trained_with_ray_train.reference_scores).all()


def test_jax_training_in_a_ray_actor(ray_session, ci_grid) -> None:
    tm = fit(TINY, ci_grid, generate(120, seed=2, grid=ci_grid), framework="jax",
             use_ray=True, epochs=1, seed=0)
    assert tm.metrics["backend"] == "ray_actor_jax"
    assert np.isfinite(tm.reference_scores).all()


def test_ray_data_scoring_matches_the_plain_loop_and_resumes(
    trained_with_ray_train, tmp_path, ci_grid
) -> None:
    shards = write_survey(tmp_path / "in", n=120, seed=4, shard_size=40, grid=ci_grid)
    local = score_shards(trained_with_ray_train, shards, tmp_path / "local", batch_size=32)
    first = score_shards(trained_with_ray_train, shards[:1], tmp_path / "ray", use_ray=True,
                         batch_size=16, object_store_limit=64 * 1024**2)
    assert first.n_scored == 40 and first.backend == "ray_data"
    again = score_shards(trained_with_ray_train, shards, tmp_path / "ray", use_ray=True,
                         batch_size=16)
    assert again.n_shards_skipped == 1 and again.n_shards_scored == 2 and again.n_scored == 80
    assert local.n_scored == 120
    for p in shards:
        a = pq.read_table(output_path(tmp_path / "local", p)).sort_by("targetid")
        b = pq.read_table(output_path(tmp_path / "ray", p)).sort_by("targetid")
        assert a.column("targetid").equals(b.column("targetid"))
        np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(),
                                   atol=1e-4)


def test_ray_scoring_hands_a_model_directory_to_the_actors_as_it_is(
    trained_with_ray_train, tmp_path, ci_grid, monkeypatch
) -> None:
    """Given a directory, the driver loads the model only to check it: it used to save a
    second copy for the actors, which for JAX imported PyTorch into the driver (issue 15)."""
    from qso_anomaly.train.trained import TrainedModel

    model_dir = trained_with_ray_train.save(tmp_path / "model")
    shards = write_survey(tmp_path / "in", n=40, seed=5, shard_size=20, grid=ci_grid)

    def no_copy(self, directory):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the driver saved a copy of the model to {directory}")

    monkeypatch.setattr(TrainedModel, "save", no_copy)
    s = score_shards(model_dir, shards, tmp_path / "out", use_ray=True, framework="jax",
                     batch_size=16)
    assert s.n_scored == 40 and s.n_shards_scored == 2 and s.backend == "ray_data"
