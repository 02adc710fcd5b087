import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_batch, write_survey
from qso_anomaly.score import output_path, score_shards
from qso_anomaly.train import fit

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(ci_grid):
    return fit(TINY, ci_grid, generate(200, seed=1, grid=ci_grid), epochs=1, seed=0)


def test_scoring_writes_one_output_per_shard_and_resumes(tmp_path, trained, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=90, seed=2, shard_size=30, grid=ci_grid)
    seen: list[int] = []
    s1 = score_shards(trained, shards[:2], tmp_path / "out", batch_size=16,
                      on_batch=lambda b, r: seen.append(len(r)))
    assert s1.n_scored == 60 and s1.n_shards_scored == 2 and sum(seen) == 60
    # "killed" after two shards: a leftover temp file must not count as done
    (tmp_path / "out" / "junk.scores.parquet.tmp").write_bytes(b"partial")
    s2 = score_shards(trained, shards, tmp_path / "out", batch_size=16)
    assert s2.n_shards_skipped == 2 and s2.n_shards_scored == 1 and s2.n_scored == 30
    ids = np.concatenate([pq.read_table(output_path(tmp_path / "out", p)).column("targetid")
                          .to_numpy() for p in shards])
    assert len(ids) == 90 and len(np.unique(ids)) == 90
    t = pq.read_table(output_path(tmp_path / "out", shards[0]))
    assert t.column_names == ["targetid", "score", "chi2_dof", "density_nll", "label", "stratum"]
    assert np.isfinite(t.column("score").to_numpy()).all()


def test_bad_input_is_counted_and_the_run_completes(tmp_path, trained, ci_grid) -> None:
    b = generate(10, seed=3, grid=ci_grid)
    b.flux[0, :3] = np.nan
    b.ivar[1, :] = 0.0
    b.ivar[2, 5] = -2.0
    b.z[3] = np.inf
    bad_rows = write_batch(b, tmp_path / "a.parquet", ci_grid)
    corrupt = tmp_path / "b.parquet"
    corrupt.write_bytes(bad_rows.read_bytes()[:300])
    missing = tmp_path / "c.parquet"
    pq.write_table(b.to_arrow(ci_grid).drop_columns(["z"]), missing)
    short = generate(4, seed=4, grid=ci_grid.__class__(3600.0, 9000.0, 3.2))
    wrong = write_batch(short, tmp_path / "d.parquet", None)
    s = score_shards(trained, [bad_rows, corrupt, missing, wrong], tmp_path / "out", batch_size=4)
    assert s.n_scored == 8
    assert s.n_rejected_by_reason == {
        "masked_pixels:nonfinite_flux": 3, "masked_pixels:negative_ivar": 1,
        "all_zero_ivar": 1, "bad_redshift": 1, "corrupt_shard": 1, "missing_columns": 1,
        "wrong_grid_length": 4,
    }
    assert s.n_rejected == 8 and s.n_shards_failed == 2
    meta = pq.read_schema(output_path(tmp_path / "out", bad_rows)).metadata
    assert b"all_zero_ivar" in meta[b"qso_anomaly.scoring"]
    assert pa.types.is_int64(pq.read_schema(output_path(tmp_path / "out", wrong)).field(
        "targetid").type)


def test_jax_and_torch_scoring_agree_through_the_shard_path(tmp_path, trained, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=20, seed=6, shard_size=20, grid=ci_grid)
    score_shards(trained, shards, tmp_path / "t", framework="torch")
    score_shards(trained, shards, tmp_path / "j", framework="jax")
    a = pq.read_table(output_path(tmp_path / "t", shards[0])).column("score").to_numpy()
    b = pq.read_table(output_path(tmp_path / "j", shards[0])).column("score").to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_score_table_marks_every_bad_row_with_its_reason(trained, ci_grid) -> None:
    from qso_anomaly.score import Scorer

    b = generate(4, seed=8, grid=ci_grid)
    b.ivar[1] = 0.0
    rows = {
        "targetid": b.targetid.tolist(), "z": b.z.tolist(),
        "flux": [r.tolist() for r in b.flux], "ivar": [r.tolist() for r in b.ivar],
        "mask": [r.tolist() for r in b.mask], "path": ["x.parquet"] * 4,
    }
    for k in ("flux", "ivar", "mask"):
        rows[k][3] = rows[k][3][:10]
    out = Scorer(trained, "torch").score_table(pa.table(rows))
    assert out.column("reject_reason").to_pylist() == ["", "all_zero_ivar", "",
                                                       "wrong_grid_length"]
    s = out.column("score").to_numpy(zero_copy_only=False)
    assert np.isfinite(s[[0, 2]]).all() and np.isnan(s[[1, 3]]).all()
    assert out.column("path").to_pylist() == ["x.parquet"] * 4
