"""The plain loop's three stages (reader thread that converts and validates, scoring thread,
writer thread): the work lands in the right thread, the read-ahead stays bounded, a failed
write is raised and leaves the resume contract intact, and the prepared path scores exactly
as the one-call path.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.score import output_path, score_shards
from qso_anomaly.score import shards as shards_mod
from qso_anomaly.score.config import ScoringConfig
from qso_anomaly.score.scorer import Scorer
from qso_anomaly.score.shards import iter_shard_batches
from qso_anomaly.train import fit

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(ci_grid):
    return fit(TINY, ci_grid, generate(120, seed=1, grid=ci_grid), epochs=1, seed=0)


def test_prepare_runs_in_the_reader_thread_and_stays_a_bounded_window_ahead(
        tmp_path, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=80, seed=2, shard_size=20, grid=ci_grid)
    calls: list[str] = []

    def prepare(rb):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        return rb.num_rows

    gen = iter_shard_batches(shards, batch_size=5, prefetch=3, prepare=prepare)
    first = next(gen)
    time.sleep(0.5)  # the reader runs ahead while the consumer holds one item
    ahead = len(calls)
    rest = list(gen)
    assert first == (shards[0], 5)
    # one item yielded + 3 queued + 1 prepared and waiting to be queued (shard end markers
    # take queue slots too, so never more than prefetch + 2 prepared batches)
    assert 2 <= ahead <= 3 + 2
    assert set(calls) == {"qso-shard-reader"}
    assert sum(x for _, x in [first, *rest] if isinstance(x, int)) == 80
    assert [p for p, x in rest if x is None] == shards
    sync = list(iter_shard_batches(shards, batch_size=5, prefetch=0, prepare=prepare))
    assert calls[-1] == threading.current_thread().name and len(sync) == len(rest) + 1


def test_prepared_path_scores_like_score_record_batch(trained, ci_grid) -> None:
    b = generate(40, seed=6, grid=ci_grid, anomaly_fraction=0.3)
    b.ivar[3] = 0.0  # rejected row (no valid pixels)
    rb = b.to_arrow(ci_grid).to_batches()[0]
    sc = Scorer(trained, config=ScoringConfig(batch_size=16))
    one = sc.score_record_batch(rb)
    two = sc.score_prepared(sc.prepare_record_batch(rb))
    assert one[0].equals(two[0]) and one[1] == two[1] and one[1]
    assert one[0].num_rows == 39 and 3 not in one[0].column("targetid").to_pylist()


def test_a_failed_write_is_raised_and_the_rerun_finishes_the_survey(
        tmp_path, trained, ci_grid, monkeypatch) -> None:
    shards = write_survey(tmp_path / "in", n=60, seed=2, shard_size=20, grid=ci_grid)
    real = shards_mod._write_output
    written: list[str] = []

    def flaky(table, path, meta):  # type: ignore[no-untyped-def]
        if path.name.startswith(shards[1].stem):
            raise OSError(28, "No space left on device", str(path))
        real(table, path, meta)
        written.append(threading.current_thread().name)

    monkeypatch.setattr(shards_mod, "_write_output", flaky)
    with pytest.raises(OSError, match="No space left"):
        score_shards(trained, shards, tmp_path / "out", batch_size=8)
    assert set(written) == {"qso-shard-writer"}
    assert output_path(tmp_path / "out", shards[0]).exists()
    assert not output_path(tmp_path / "out", shards[1]).exists()
    assert not list((tmp_path / "out").glob("*.tmp"))
    monkeypatch.setattr(shards_mod, "_write_output", real)
    s = score_shards(trained, shards, tmp_path / "out", batch_size=8)
    assert s.n_shards_skipped >= 1 and s.n_shards_skipped + s.n_shards_scored == 3
    ids = np.concatenate([pq.read_table(output_path(tmp_path / "out", p)).column("targetid")
                          .to_numpy() for p in shards])
    assert ids.size == 60 and np.unique(ids).size == 60


def test_ray_actor_streams_several_shards_per_call_with_one_row_each(
        tmp_path, ci_grid, trained) -> None:
    """The Ray actor's call scores all shards of its batch in one stream (read-ahead across
    them) and still answers one row per shard; an unreadable shard in the middle is failed
    alone."""
    shards = write_survey(tmp_path / "in", n=60, seed=4, shard_size=20, grid=ci_grid)
    bad = tmp_path / "in" / "shard-broken.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    model_dir = trained.save(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    actor = shards_mod.RayShardScorer(str(model_dir), str(out),
                                      ScoringConfig(batch_size=8).to_dict())
    paths = [shards[0], bad, shards[1], shards[2]]
    rows = actor({"path": np.asarray([str(p) for p in paths])})
    assert list(rows["path"]) == [str(p) for p in paths]
    assert list(rows["failed"]) == [0, 1, 0, 0]
    written = [pq.ParquetFile(output_path(out, p)).metadata.num_rows for p in shards]
    assert list(rows["n_scored"]) == [written[0], 0, written[1], written[2]]
    assert sum(written) > 50 and not output_path(out, bad).exists()
    assert shards_mod.shards_per_call(40, 1) == 8 and shards_mod.shards_per_call(3, 2) == 1
    assert shards_mod.shards_per_call(40, 4) == 3
