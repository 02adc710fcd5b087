"""Resume after a hard kill: a scoring process is SIGKILLed at about half of the shards, the
rerun finishes the remaining shards and no row appears twice (the benchmark repeats this at
100,000 spectra: ``benchmarks/bench_qso_throughput.py``, ``results.resume``)."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from qso_test_support import TINY

from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.score import output_path, score_shards
from qso_anomaly.train import fit

pytestmark = pytest.mark.unit


def test_restart_after_kill_skips_done_shards_without_duplicates(tmp_path, ci_grid) -> None:
    tm = fit(TINY, ci_grid, generate(120, seed=1, grid=ci_grid), epochs=1, seed=0)
    tm.save(tmp_path / "model")
    shards = write_survey(tmp_path / "in", n=160, seed=2, shard_size=10, grid=ci_grid)
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time
        from qso_anomaly.score import score_shards
        paths = {[str(p) for p in shards]!r}
        score_shards({str(tmp_path / 'model')!r}, paths, {str(out)!r}, batch_size=5,
                     on_batch=lambda b, r: time.sleep(0.2))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 240
        half = len(shards) // 2
        while time.time() < deadline and len(list(out.glob("*.scores.parquet"))) < half:
            time.sleep(0.2)
            if proc.poll() is not None:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done_before = len(list(out.glob("*.scores.parquet")))
    assert len(shards) // 2 <= done_before < len(shards)
    s = score_shards(tmp_path / "model", shards, out, batch_size=5)
    assert s.n_shards_skipped == done_before
    assert s.n_shards_scored == len(shards) - done_before
    ids = np.concatenate([pq.read_table(output_path(out, p)).column("targetid").to_numpy()
                          for p in shards])
    assert len(ids) == 160 and len(np.unique(ids)) == 160
