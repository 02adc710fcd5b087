"""The pipeline's steps as public functions (train/score/explain/registry/report ``steps``/``run``
modules): each works on its own, without the orchestrator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qso_anomaly.data.synth import write_survey
from qso_anomaly.errors import DataError
from qso_anomaly.registry.steps import data_lineage, evaluate_scored, normal_score_drift
from qso_anomaly.score.run import ScoredRun, load_scored
from qso_anomaly.train.steps import select_spec

pytestmark = [pytest.mark.unit, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory, ci_grid) -> list[Path]:  # type: ignore[no-untyped-def]
    return write_survey(tmp_path_factory.mktemp("survey"), 60, 3, shard_size=30, grid=ci_grid,
                        anomaly_fraction=0.3)


def _scores_file(path: Path, targetid: np.ndarray, score: np.ndarray,
                 label: list[str] | None) -> Path:
    cols = {"targetid": pa.array(targetid, pa.int64()), "score": pa.array(score)}
    if label is not None:
        cols["label"] = pa.array(label)
    pq.write_table(pa.table(cols), path)
    return path


def _run(score: np.ndarray, label: np.ndarray | None, reference: np.ndarray) -> ScoredRun:
    n = score.size
    return ScoredRun(scores_dir=Path("."), targetid=np.arange(n), score=score, label=label,
                     z=np.full(n, 1.5), snr=np.full(n, 3.0), reference=reference,
                     flag_threshold=2.0, metrics=None, drift=None,
                     spectra_per_second=float("nan"), rejected={})


def test_select_spec_gives_the_ci_or_the_full_grid() -> None:
    spec, grid = select_spec(False)
    assert grid.npix == 1946 and spec.input_grid().npix == grid.npix
    full, fgrid = select_spec(True)
    assert fgrid.npix == 7781 and full.version == spec.version


def test_load_scored_joins_z_and_snr_by_targetid_and_names_unknown_targetids(
        tmp_path: Path, survey: list[Path]) -> None:
    side = pq.read_table(survey[1], columns=["targetid", "z", "snr", "label"])
    tid = side.column("targetid").to_numpy()[::-1][:10]   # reversed order, second shard only
    labels = [str(x) for x in side.column("label").to_pylist()[::-1][:10]]
    out = _scores_file(tmp_path / "a.scores.parquet", tid, np.linspace(0, 1, 10), labels)
    run = load_scored([out], survey, np.zeros(50), 0.5)
    want = dict(zip(side.column("targetid").to_pylist(), side.column("z").to_pylist(),
                    strict=True))
    np.testing.assert_allclose(run.z, [want[int(t)] for t in tid])
    assert run.n == 10 and run.n_flagged == 5 and run.label is not None
    assert run.metrics is None and run.drift is not None
    with pytest.raises(DataError, match="read back from files"):
        run.require_metrics()
    bad = _scores_file(tmp_path / "b.scores.parquet", np.array([-7]), np.zeros(1), None)
    with pytest.raises(DataError, match="not in the input shards"):
        load_scored([bad], survey, np.zeros(0), 0.5)
    with pytest.raises(DataError, match="no scoring outputs"):
        load_scored([], survey, np.zeros(0), 0.5)


def test_evaluation_needs_two_classes_and_drift_uses_only_normal_spectra() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=400)
    score = np.concatenate([rng.normal(size=200), rng.normal(4.0, 1.0, size=40)])
    label = np.array(["normal"] * 200 + ["hibal"] * 40)
    ev = evaluate_scored(_run(score, label, ref))
    assert ev is not None and ev["overall"]["auroc"] > 0.95
    assert evaluate_scored(_run(score, None, ref)) is None
    assert evaluate_scored(_run(score[:200], label[:200], ref)) is None
    drift = normal_score_drift(_run(score, label, ref))
    assert drift is not None and drift["n_current"] == 200      # the 40 anomalies are left out
    assert normal_score_drift(_run(score, label, np.zeros(0))) is None


def test_data_lineage_hashes_every_shard_and_template(survey: list[Path], robust_model) -> None:  # type: ignore[no-untyped-def]
    train_dir = survey[0].parent
    lin = data_lineage(train_dir, survey, robust_model, generator_seed=3, n_train=60,
                       train_anomaly_fraction=0.3, eval_generator_seed=4,
                       eval_anomaly_fraction=0.1)
    assert set(lin["data_sha256"]) == {p.name for p in survey} | {"manifest.json"}
    assert len(lin["data_version"]) == 64 and lin["generator"]
    assert json.loads(lin["grid"]) == robust_model.grid.to_dict()
    again = data_lineage(train_dir, survey, robust_model, generator_seed=3, n_train=60,
                         train_anomaly_fraction=0.3, eval_generator_seed=4,
                         eval_anomaly_fraction=0.1)
    assert again["data_version"] == lin["data_version"]
    with pytest.raises(DataError, match="manifest"):
        data_lineage(train_dir / "nope", survey, robust_model, generator_seed=3, n_train=60,
                     train_anomaly_fraction=0.3, eval_generator_seed=4,
                     eval_anomaly_fraction=0.1)


def test_score_explain_and_report_steps_chain_without_the_pipeline(
        tmp_path: Path, survey: list[Path], robust_model) -> None:  # type: ignore[no-untyped-def]
    from qso_anomaly.explain.run import explain_scored
    from qso_anomaly.report.steps import write_run_report
    from qso_anomaly.score.run import score_run

    scored = score_run(robust_model, survey, tmp_path, model_name="m", version="7",
                       flag_quantile=0.9, batch_size=32)
    assert scored.n == 60 and scored.require_metrics().n_scored == 60
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [
        "shard-00000.scores.parquet", "shard-00001.scores.parquet"]
    ex = explain_scored(robust_model, survey, scored, tmp_path / "explain", top_k=2,
                        per_class=0, ig_steps=4, occlusion_window=64, deletion_steps=4)
    assert len(ex.index) == 2 and (tmp_path / "explain" / "xai_report.json").is_file()
    top = set(scored.targetid[np.argsort(-scored.score)[:2]].tolist())
    assert set(ex.targetid.tolist()) == top
    html = write_run_report(robust_model, {"name": "m", "version": "7"}, scored,
                            tmp_path / "r.html", explanations=ex,
                            evaluation=evaluate_scored(scored)).read_text()
    assert "m v7" in html and 'id="xai"' in html


def test_jax_score_factory_matches_the_torch_score(survey: list[Path], robust_model) -> None:  # type: ignore[no-untyped-def]
    import jax.numpy as jnp
    import torch

    from qso_anomaly.data.io import read_shards
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.explain.run import jax_score_factory
    from qso_anomaly.models.torch_model import anomaly_score_torch

    batch, _ = clean_batch(next(iter(read_shards(survey[:1], robust_model.grid))))
    batch = batch.take(slice(0, 4))
    model = robust_model.torch_model()
    f = jax_score_factory(robust_model)(model)
    got = np.asarray(f(jnp.asarray(batch.flux), jnp.asarray(batch.ivar), jnp.asarray(batch.z)))
    with torch.no_grad():
        want = anomaly_score_torch(model, torch.as_tensor(batch.flux),
                                   torch.as_tensor(batch.ivar), torch.as_tensor(batch.z))
    np.testing.assert_allclose(got, want.numpy(), rtol=2e-3, atol=2e-3)
