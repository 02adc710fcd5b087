"""One scoring-input entry point (``qso_anomaly.data.inputs``): Parquet shards as they are, DESI
healpix coadds through the model's reader and data policy, with counts by reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from qso_test_support import write_desi_healpix

from qso_anomaly.data.inputs import is_desi_input, parquet_shards, prepare_input
from qso_anomaly.data.policy import DataPolicy
from qso_anomaly.data.synth import write_survey
from qso_anomaly.errors import DataError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]


def test_parquet_input_is_passed_through_and_scores_files_are_left_out(
        tmp_path: Path, ci_grid) -> None:  # type: ignore[no-untyped-def]
    shards = write_survey(tmp_path / "s", 20, 1, shard_size=10, grid=ci_grid)
    (tmp_path / "s" / "shard-00000.scores.parquet").write_bytes(b"x")
    got = prepare_input(tmp_path / "s", grid=ci_grid, policy=DataPolicy(),
                        work_dir=tmp_path / "w")
    assert got.kind == "parquet" and got.shards == shards and got.rejected_on_read == {}
    assert parquet_shards([str(shards[1]), str(shards[0])]) == [shards[1], shards[0]]
    assert not (tmp_path / "w").exists()
    with pytest.raises(DataError, match="no Parquet shards"):
        parquet_shards(tmp_path / "nothing")


def test_desi_directory_file_or_list_is_read_onto_the_grid_with_policy_counts(
        tmp_path: Path, ci_grid) -> None:  # type: ignore[no-untyped-def]
    b = write_desi_healpix(tmp_path / "hp", 12, 3, n_zwarn=3)
    coadd = next((tmp_path / "hp").glob("coadd-*.fits"))
    assert is_desi_input(tmp_path / "hp") and is_desi_input([coadd])
    policy = DataPolicy(z_min=0.05, z_max=4.5)
    for data in (tmp_path / "hp", coadd, [str(coadd)]):
        got = prepare_input(data, grid=ci_grid, policy=policy, work_dir=tmp_path / "w")
        assert got.kind == "desi" and got.rejected_on_read["zwarn"] == 3
        table = pq.read_table(got.shards[0])
        assert table.num_rows + sum(v for k, v in got.rejected_on_read.items()
                                    if not k.startswith("masked_pixels:")) == 12
        assert len(table.column("flux")[0]) == ci_grid.npix
        assert set(table.column("targetid").to_pylist()) <= set(b.targetid[3:].tolist())
    # explicit redshift files, matched by TARGETID
    rr = sorted((tmp_path / "hp").glob("redrock-*.fits"))
    got = prepare_input([coadd], grid=ci_grid, policy=policy, work_dir=tmp_path / "w2",
                        redshifts=rr)
    z = dict(zip(b.targetid.tolist(), b.z.tolist(), strict=True))
    t = pq.read_table(got.shards[0], columns=["targetid", "z"])
    np.testing.assert_allclose(t.column("z").to_numpy(),
                               [z[i] for i in t.column("targetid").to_pylist()], rtol=1e-6)


def test_mixed_input_and_nothing_passing_the_policy_are_clear_errors(
        tmp_path: Path, ci_grid) -> None:  # type: ignore[no-untyped-def]
    write_desi_healpix(tmp_path / "hp", 4, 5, n_zwarn=4)
    shards = write_survey(tmp_path / "s", 5, 1, grid=ci_grid)
    with pytest.raises(DataError, match="mixed"):
        is_desi_input([tmp_path / "hp", shards[0]])
    with pytest.raises(DataError, match="no spectrum passed the data policy.*zwarn"):
        prepare_input(tmp_path / "hp", grid=ci_grid, policy=DataPolicy(),
                      work_dir=tmp_path / "w")


def test_a_file_named_twice_however_is_read_once(tmp_path: Path, ci_grid) -> None:  # type: ignore[no-untyped-def]
    """A directory and a file in it, a link to either, or a path written two ways name the
    same file: reading it twice would score its spectra twice (skyrig's config check only sees
    paths written alike; ``--data`` is also given by hand)."""
    shards = write_survey(tmp_path / "s", 20, 1, shard_size=10, grid=ci_grid)
    (tmp_path / "link").symlink_to(tmp_path / "s")
    (tmp_path / "hard.parquet").hardlink_to(shards[0])
    assert parquet_shards([shards[0], tmp_path / "hard.parquet"]) == [shards[0]]
    assert parquet_shards([tmp_path / "s", shards[1], tmp_path / "link",
                           str(tmp_path / "s" / ".." / "s" / shards[0].name)]) == shards
    write_desi_healpix(tmp_path / "hp", 12, 3, n_zwarn=3)
    coadd = next((tmp_path / "hp").glob("coadd-*.fits"))
    once = prepare_input(tmp_path / "hp", grid=ci_grid, policy=DataPolicy(),
                         work_dir=tmp_path / "w1")
    twice = prepare_input([tmp_path / "hp", coadd], grid=ci_grid, policy=DataPolicy(),
                          work_dir=tmp_path / "w2")
    assert sum(pq.read_metadata(s).num_rows for s in twice.shards) == sum(
        pq.read_metadata(s).num_rows for s in once.shards)
    assert twice.rejected_on_read == once.rejected_on_read and twice.sources == once.sources
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    with pytest.raises(DataError, match="no Parquet shards"):  # not the resolver's error
        parquet_shards([tmp_path / "loop-a", shards[0]])
