"""Streamed scoring path: zero-copy tensor columns, bounded reads, settings, actor-pool sizing,
one JAX compilation, and the one-JSON-object contract of the throughput benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.score import ScoringConfig, output_path, score_shards
from qso_anomaly.score.columns import record_batch_to_spectra, tensor_column, unpack_bits
from qso_anomaly.score.config import (
    ScoringConfigError,
    activation_bytes_per_spectrum,
    gpu_batch_size,
    worker_env,
)
from qso_anomaly.score.scorer import Scorer
from qso_anomaly.score.shards import actor_pool_size, iter_shard_batches
from qso_anomaly.train import fit

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(ci_grid):
    return fit(TINY, ci_grid, generate(120, seed=1, grid=ci_grid), epochs=1, seed=0)


def test_float_tensor_columns_are_views_of_the_arrow_buffer() -> None:
    values = np.arange(5 * 4, dtype=np.float32)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(values), 4)
    out = tensor_column(arr, 4, np.float32)
    assert out is not None and out.shape == (5, 4)
    assert not out.flags.writeable  # a view of Arrow memory, not a copy
    np.testing.assert_array_equal(out, values.reshape(5, 4))
    sliced = tensor_column(arr.slice(2, 2), 4, np.float32)  # offset into the child buffer
    np.testing.assert_array_equal(sliced, values.reshape(5, 4)[2:4])
    masks = pa.FixedSizeListArray.from_arrays(pa.array(values.astype(int) % 3 == 0), 4)
    np.testing.assert_array_equal(tensor_column(masks, 4, bool),
                                  (values.astype(int) % 3 == 0).reshape(5, 4))
    assert tensor_column(arr, 5, np.float32) is None  # another grid
    assert tensor_column(pa.array([[1.0, 2.0], [3.0]]), 2, np.float32) is None  # ragged


def test_ragged_rows_are_dropped_and_counted(ci_grid) -> None:
    b = generate(6, seed=3, grid=ci_grid)
    table = b.to_arrow(ci_grid)
    flux = [list(r) for r in b.flux]
    flux[2] = flux[2][:-1]
    table = table.set_column(table.column_names.index("flux"), "flux",
                             pa.array(flux, pa.list_(pa.float32())))
    batch, idx, counts = record_batch_to_spectra(table, ci_grid.npix)
    assert counts == {"wrong_grid_length": 1}
    assert list(idx) == [0, 1, 3, 4, 5] and len(batch) == 5
    np.testing.assert_array_equal(batch.targetid, b.targetid[idx])
    np.testing.assert_allclose(batch.flux, b.flux[idx])


def test_reads_are_streamed_in_batches_with_a_bounded_window(tmp_path, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=60, seed=2, shard_size=30, grid=ci_grid)
    gen = iter_shard_batches(shards, batch_size=8, prefetch=2)
    items = [next(gen)]
    gen.close()  # stops the reader thread while it is ahead
    sizes = [rb.num_rows for _, rb in iter_shard_batches(shards, batch_size=8, prefetch=2)
             if isinstance(rb, pa.RecordBatch)]
    assert items[0][1].num_rows == 8
    assert max(sizes) <= 8 and sum(sizes) == 60
    sync = list(iter_shard_batches(shards, batch_size=8, prefetch=0))
    assert [p for p, rb in sync if rb is None] == shards  # end marker after every shard


def test_a_shard_that_breaks_while_streaming_is_counted(tmp_path, trained, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=40, seed=2, shard_size=20, grid=ci_grid)
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[:4] + b"\0" * 4000 + data[4004:])  # footer intact, pages broken
    s = score_shards(trained, shards, tmp_path / "out", batch_size=8)
    assert s.n_scored == 20 and s.n_shards_failed == 1
    assert s.n_rejected_by_reason == {"corrupt_shard": 1}
    assert not output_path(tmp_path / "out", shards[1]).exists()


def test_jax_batches_are_padded_to_one_shape_and_match_torch(trained, ci_grid) -> None:
    from qso_anomaly.models import jax_model

    b = generate(23, seed=5, grid=ci_grid)
    fn = jax_model._jitted("score", trained.spec, trained.grid)
    before = fn._cache_size()  # other tests of the session may have compiled other shapes
    jx = Scorer(trained, config=ScoringConfig(framework="jax", batch_size=16))
    pt = Scorer(trained, config=ScoringConfig(framework="torch", batch_size=16))
    parts = [jx.score_batch(b.take(slice(s, e))) for s, e in ((0, 5), (5, 16), (16, 23))]
    rt = pt.score_batch(b)
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), rt.score, atol=1e-3)
    assert fn._cache_size() - before <= 1  # three batch sizes, at most one compilation


def test_jax_batches_dispatch_no_eager_conversions(trained, ci_grid, monkeypatch) -> None:
    """A scored batch runs the one compiled scoring function and nothing else: no eager op
    per input array (``jnp.asarray`` of NumPy dispatched a convert_element_type each time)."""
    from jax._src import dispatch

    b = generate(16, seed=6, grid=ci_grid)
    jx = Scorer(trained, config=ScoringConfig(framework="jax", batch_size=16))
    jx.score_batch(b)  # compile outside the count
    eager: list[str] = []
    real = dispatch.apply_primitive

    def counting(prim, *args, **params):  # type: ignore[no-untyped-def]
        eager.append(str(prim))
        return real(prim, *args, **params)

    monkeypatch.setattr(dispatch, "apply_primitive", counting)
    jx.score_batch(b)
    jx.score_batch(b.take(slice(0, 9)))  # padded partial batch
    assert eager == []


_CACHE_CHILD = """
import json, sys
import jax.monitoring as m
from qso_anomaly.data.synth import generate
from qso_anomaly.score import ScoringConfig
from qso_anomaly.score.scorer import Scorer
from qso_anomaly.train import TrainedModel
hits = []
m.register_event_listener(lambda e, **kw: hits.append(e) if "cache_hits" in e else None)
tm = TrainedModel.load(sys.argv[1])
cfg = ScoringConfig.from_env(framework="jax", batch_size=16)
s = Scorer(tm, config=cfg)
s.score_batch(generate(16, seed=7, grid=tm.grid))
print(json.dumps({"cache": str(s.jax_cache), "hits": len(hits)}))
"""


def test_jax_compilations_are_cached_across_processes(trained, tmp_path) -> None:
    """A second scoring process (a rerun, another Ray actor) loads the compiled scoring
    function from the persistent cache instead of compiling it again."""
    import os

    model = trained.save(tmp_path / "model")
    cache = tmp_path / "jax-cache"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", QSO_SCORE_JAX_CACHE_DIR=str(cache))
    runs = [json.loads(subprocess.run(
        [sys.executable, "-c", _CACHE_CHILD, str(model)], env=env, capture_output=True,
        text=True, check=True, timeout=300).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert runs[0]["cache"] == runs[1]["cache"] == str(cache)
    assert any(cache.iterdir())
    assert runs[0]["hits"] == 0 and runs[1]["hits"] >= 1
    off = ScoringConfig(jax_cache_dir="off")
    assert off.jax_cache_path() is None
    assert ScoringConfig.from_env({"QSO_SCORE_JAX_CACHE_DIR": "/x/y"}).jax_cache_path() == \
        Path("/x/y")


def test_settings_validate_and_come_from_the_environment() -> None:
    cfg = ScoringConfig.from_env({"QSO_SCORE_DEVICE": "cuda", "QSO_SCORE_NUM_GPUS": "0.5",
                                  "QSO_SCORE_BATCH_SIZE": "512", "QSO_SCORE_PIN_MEMORY": "no",
                                  "QSO_SCORE_FRAMEWORK": "jax"}, batch_size=1024)
    assert (cfg.device, cfg.num_gpus, cfg.batch_size, cfg.pin_memory) == ("cuda", 0.5, 1024,
                                                                           False)
    assert worker_env(cfg) == {"OMP_WAIT_POLICY": "PASSIVE",
                               "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    with pytest.raises(ScoringConfigError, match="QSO_SCORE_NUM_GPUS"):
        ScoringConfig.from_env({"QSO_SCORE_NUM_GPUS": "half"})
    with pytest.raises(ScoringConfigError, match="num_gpus=1.0 needs device='cuda'"):
        ScoringConfig(num_gpus=1.0)
    with pytest.raises(ScoringConfigError, match="batch_size=0"):
        ScoringConfig(batch_size=0)


def test_actor_pool_follows_the_resources_ray_reports() -> None:
    two = actor_pool_size({"CPU": 2.0}, ScoringConfig())
    assert (two.concurrency, two.threads, two.actor_cpus) == (2, 1, 1.0)  # one actor per core
    big = actor_pool_size({"CPU": 16.0}, ScoringConfig())
    assert big.concurrency == 16 and big.threads == 1 and big.concurrency * big.actor_cpus <= 16
    paired = actor_pool_size({"CPU": 16.0}, ScoringConfig(threads=2))
    assert (paired.concurrency, paired.threads, paired.actor_cpus) == (8, 2, 2.0)
    for pool in (two, big, paired):  # threads never outnumber the cores
        assert pool.concurrency * pool.threads <= (2 if pool is two else 16)
    gpu = actor_pool_size({"CPU": 8.0, "GPU": 1.0}, ScoringConfig(device="cuda", num_gpus=0.5))
    assert (gpu.concurrency, gpu.num_gpus) == (2, 0.5)
    fixed = actor_pool_size({"CPU": 2.0}, ScoringConfig(concurrency=3, actor_cpus=0.25))
    assert (fixed.concurrency, fixed.actor_cpus) == (3, 0.25)


def test_a4000_batch_size_from_the_activation_estimate() -> None:
    full = ModelSpec.full()
    npix = full.input_grid().npix
    per = activation_bytes_per_spectrum(full.channels, full.pool, npix, full.n_rest)
    b = gpu_batch_size(full.channels, full.pool, npix, full.n_rest)
    assert b == 512 and b * per <= 8 * 1024**3 < 2 * b * per
    assert gpu_batch_size(full.channels, full.pool, npix, full.n_rest, 48 * 1024**3) > b


def test_throughput_benchmark_prints_exactly_one_json_object(tmp_path, trained) -> None:
    trained.save(tmp_path / "model")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_qso_throughput.py"),
         "--n-spectra", "40", "--shard-size", "10", "--batch-size", "16",
         "--frameworks", "torch,jax", "--no-ray", "--no-resume", "--plain-rounds", "2",
         "--model-dir", str(tmp_path / "model"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert proc.stdout.count("\n") == 1
    r = result["results"]
    assert r["plain_torch"]["n_scored"] == 40 and r["plain_torch"]["peak_rss_mib"] > 0
    torch_s, jax_s = r["plain_torch"]["round_seconds"], r["plain_jax"]["round_seconds"]
    assert len(torch_s) == len(jax_s) == 2  # torch, jax, then jax, torch
    assert r["jax_over_torch_plain_time"] == pytest.approx(sum(jax_s) / sum(torch_s))
    torch_c, jax_c = r["plain_torch"]["round_cpu_seconds"], r["plain_jax"]["round_cpu_seconds"]
    assert all(c > 0 for c in torch_c + jax_c)
    assert r["jax_over_torch_plain_cpu"] == pytest.approx(sum(jax_c) / sum(torch_c))
    for fw in ("torch", "jax"):  # model only: a child before each of the 2 plain runs
        mo = r[f"model_only_{fw}"]
        assert len(mo["samples_spectra_per_s"]) == 2 * 7
        assert mo["spectra_per_s"] == pytest.approx(np.median(mo["samples_spectra_per_s"]))
        assert r[f"plain_over_model_only_{fw}"] > 0 and r[f"plain_over_model_only_cpu_{fw}"] > 0
    assert "spectra" in proc.stderr  # progress went to stderr


def test_throughput_benchmark_ray_ratio_is_taken_over_every_round(tmp_path, trained) -> None:
    """Ray Data runs after the plain loop in each round and Ray / plain is the ratio of the
    summed times (one Ray sample moved it by 0.14 on the shared machine)."""
    trained.save(tmp_path / "model")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_qso_throughput.py"),
         "--n-spectra", "40", "--shard-size", "10", "--batch-size", "16",
         "--frameworks", "torch", "--no-resume", "--plain-rounds", "2",
         "--model-dir", str(tmp_path / "model"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, check=True)
    r = json.loads(proc.stdout)["results"]
    plain, ray_s = r["plain_torch"]["round_seconds"], r["ray_torch"]["round_seconds"]
    assert len(plain) == len(ray_s) == 2 and r["ray_torch"]["n_scored"] == 40
    assert r["ray_over_plain_torch"] == pytest.approx(sum(ray_s) / sum(plain))
    assert r["ray_over_plain_torch_rounds"] == pytest.approx(
        [a / b for a, b in zip(ray_s, plain, strict=True)])


def test_streamed_output_matches_the_in_memory_scores(tmp_path, trained, ci_grid) -> None:
    shards = write_survey(tmp_path / "in", n=50, seed=4, shard_size=25, grid=ci_grid)
    s = score_shards(trained, shards, tmp_path / "out", batch_size=7)
    assert s.n_scored == 50
    got = pq.read_table([str(output_path(tmp_path / "out", p)) for p in shards])
    src = pq.read_table([str(p) for p in shards], columns=["targetid", "label"])
    assert got.column("targetid").to_pylist() == src.column("targetid").to_pylist()
    assert got.column("label").to_pylist() == src.column("label").to_pylist()
    batch, _, _ = record_batch_to_spectra(pq.read_table([str(p) for p in shards]),
                                          ci_grid.npix)
    ref = Scorer(trained).score_rows(batch)[0]
    np.testing.assert_allclose(got.column("score").to_numpy(), ref.score, rtol=1e-5, atol=1e-5)


def test_cli_gpu_settings_are_checked_before_the_model_loads(tmp_path, monkeypatch,
                                                             capsys) -> None:
    from qso_anomaly.cli import main

    for key in ("DEVICE", "NUM_GPUS", "CONCURRENCY", "PRECISION"):
        monkeypatch.setenv(f"QSO_SCORE_{key}", "")  # restored after the test
    rc = main(["score", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path),
               "--out", str(tmp_path / "out"), "--num-gpus", "1"])
    assert rc == 2
    assert "num_gpus=1.0 needs device='cuda'" in capsys.readouterr().err


def test_pipeline_leaves_the_batch_size_to_the_job_environment(monkeypatch, tmp_path) -> None:
    """QSO_SCORE_BATCH_SIZE of a Ray job (skyrig:workload.scoring) reaches score_shards: the
    pipeline passes a batch size only when --batch-size is given (it always passed 256)."""
    import types

    import qso_anomaly.score.shards as score_module
    from qso_anomaly import pipeline
    from qso_anomaly.score.run import score_run

    class Stop(Exception):
        pass

    seen: list[int | None] = []

    def fake_score_shards(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("batch_size"))
        raise Stop

    monkeypatch.setattr(score_module, "score_shards", fake_score_shards)
    from qso_anomaly.train.mondrian import MondrianCalibration

    ref = np.linspace(0.0, 1.0, 50)
    trained = types.SimpleNamespace(reference_scores=ref,
                                    flag_calibration=lambda: MondrianCalibration.pooled(ref))
    for argv in ([], ["--batch-size", "64"]):
        cfg = pipeline.config_from_args(["--out", str(tmp_path), *argv])
        with pytest.raises(Stop):
            score_run(trained, [], tmp_path, model_name="qso-ae-torch",  # type: ignore[arg-type]
                      version="1", flag_quantile=0.99, batch_size=cfg.batch_size)
    assert seen == [None, 64]
    monkeypatch.setenv("QSO_SCORE_BATCH_SIZE", "96")
    assert ScoringConfig.from_env(batch_size=seen[0]).batch_size == 96


_BIG_PARENT = """
import subprocess, sys
import numpy as np
ballast = np.ones(600 * 2**20 // 8)  # 600 MiB touched by the parent
child = "from qso_anomaly.bench.rss import peak_rss_mib; print(peak_rss_mib())"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                     check=True).stdout.strip())
"""


def test_a_child_reports_its_own_peak_rss_not_its_parents() -> None:
    """ru_maxrss of a child carries the parent's RSS across fork and exec (the benchmark's
    plain-loop children reported the benchmark process's 1.7 GB); VmHWM does not."""
    out = subprocess.run([sys.executable, "-c", _BIG_PARENT], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert 0 < float(out) < 300


def test_boolean_columns_unpack_like_arrow_at_every_offset() -> None:
    """unpack_bits (np.unpackbits of Arrow's LSB-first bitmap) gives Arrow's own values for
    sliced arrays at every bit offset, and mask tensor columns of sliced batches."""
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 8, 9, 100):
        a = pa.array(rng.random(n) < 0.4)
        for off in range(min(n, 11)):
            s = a.slice(off)
            assert np.array_equal(unpack_bits(s), np.asarray(s.to_pylist(), dtype=bool))
    m = rng.random((9, 13)) < 0.3
    col = pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), 13)
    for off in range(9):
        got = tensor_column(col.slice(off), 13, bool)
        assert got is not None and got.dtype == bool and np.array_equal(got, m[off:])


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_streamed_jax_overlap_gives_the_per_batch_scores(tmp_path, trained, ci_grid,
                                                        framework) -> None:
    """The plain loop starts batch k+1 before it collects batch k (JAX dispatches without
    waiting), and score_batch pipelines JAX chunks: rows, order, callbacks and scores are those
    of scoring every batch on its own, across shard ends and with rejected rows."""
    shards = write_survey(tmp_path / "in", n=45, seed=6, shard_size=20, grid=ci_grid)
    t = pq.read_table(shards[1])
    z = t.column("z").to_numpy().copy()
    z[3] = -1.0  # rejected (bad_redshift) in the middle of a batch
    pq.write_table(t.set_column(t.schema.get_field_index("z"), "z", pa.array(z, pa.float32())),
                   shards[1])
    cfg = ScoringConfig(framework=framework, batch_size=8)
    seen: list[np.ndarray] = []
    s = score_shards(trained, shards, tmp_path / "out", config=cfg,
                     on_batch=lambda b, r: seen.append(b.targetid.copy()))
    assert s.n_scored == 44 and s.n_rejected_by_reason.get("bad_redshift") == 1
    got = pq.read_table([str(output_path(tmp_path / "out", p)) for p in shards])
    sc = Scorer(trained, config=cfg)
    want, ids = [], []
    for p in shards:
        for rb in pq.ParquetFile(p).iter_batches(batch_size=8):
            table, _, good, _ = sc.score_prepared(sc.prepare_record_batch(rb))
            want.append(table.column("score").to_numpy())
            ids.append(good.targetid if good is not None else np.zeros(0, np.int64))
    np.testing.assert_array_equal(got.column("score").to_numpy(), np.concatenate(want))
    assert [x.tolist() for x in seen] == [x.tolist() for x in ids if len(x)]
    b = generate(37, seed=8, grid=ci_grid)
    whole = sc.score_batch(b)
    parts = [sc.score_batch(b.take(slice(i, i + 8))) for i in range(0, 37, 8)]
    np.testing.assert_array_equal(whole.score, np.concatenate([r.score for r in parts]))
