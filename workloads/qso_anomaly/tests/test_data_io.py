import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.io import read_shard, read_shards
from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.data.validate import clean_batch, n_rejected_rows
from qso_anomaly.errors import DataError, ShardError


def test_arrow_round_trip_preserves_every_field(ci_grid) -> None:
    b = generate(20, seed=1, grid=ci_grid)
    t = b.to_arrow(ci_grid)
    back = SpectraBatch.from_arrow(t)
    for name in ("targetid", "z", "flux", "ivar", "mask", "label", "truth_mask", "snr"):
        assert np.array_equal(getattr(back, name), getattr(b, name)), name
    assert len(back.take([1, 3])) == 2


def test_shards_declare_non_null_pixels_and_old_nullable_shards_read_the_same(
        tmp_path, ci_grid) -> None:
    """Pixel elements are written non-nullable (no Parquet definition level per value, a
    quarter less decoding); shards written before, with nullable elements, read and score
    to the same arrays on both the reader and the scorer's zero-copy path."""
    from qso_anomaly.score.columns import record_batch_to_spectra

    b = generate(30, seed=2, grid=ci_grid)
    new = b.to_arrow(ci_grid)
    for c in ("flux", "ivar", "mask", "truth_mask"):
        assert not new.schema.field(c).type.value_field.nullable, c
    old = pa.table({c: (pa.FixedSizeListArray.from_arrays(new.column(c).combine_chunks().values
                                                          .cast(new.column(c).type.value_type),
                                                          ci_grid.npix)
                        if c in ("flux", "ivar", "mask", "truth_mask") else new.column(c))
                    for c in new.column_names}).replace_schema_metadata(new.schema.metadata)
    assert old.schema.field("flux").type.value_field.nullable
    for name, table in (("new", new), ("old", old)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    (got_new, _), (got_old, _) = (read_shard(tmp_path / f"{n}.parquet") for n in ("new", "old"))
    fast = [record_batch_to_spectra(pq.read_table(tmp_path / f"{n}.parquet"), ci_grid.npix)[0]
            for n in ("new", "old")]
    for name in ("flux", "ivar", "mask"):
        want = getattr(b, name)
        for got in (got_new, got_old, *fast):
            assert np.array_equal(getattr(got, name), want), name


def test_write_survey_streams_reproducible_shards(tmp_path, ci_grid) -> None:
    paths = write_survey(tmp_path / "s", n=250, seed=9, shard_size=100, grid=ci_grid)
    assert [p.name for p in paths] == [f"shard-0000{i}.parquet" for i in range(3)]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["seed"] == 9 and manifest["grid"]["npix"] == ci_grid.npix
    assert len(manifest["templates_sha256"]) == 7
    batches = list(read_shards(paths))
    assert [len(b) for b in batches] == [100, 100, 50]
    ids = np.concatenate([b.targetid for b in batches])
    assert len(np.unique(ids)) == 250
    again = write_survey(tmp_path / "t", n=250, seed=9, shard_size=100, grid=ci_grid)
    assert pq.read_table(again[1]).equals(pq.read_table(paths[1]))


def test_clean_batch_masks_bad_pixels_and_rejects_bad_rows(ci_grid) -> None:
    b = generate(8, seed=4, grid=ci_grid)
    b.flux[0, :5] = np.nan
    b.flux[1, 7] = np.inf
    b.ivar[2, 10:13] = -1.0
    b.ivar[3] = 0.0
    b.z[4] = np.nan
    clean, counts = clean_batch(b)
    assert counts == {
        "masked_pixels:nonfinite_flux": 6,
        "masked_pixels:negative_ivar": 3,
        "all_zero_ivar": 1,
        "bad_redshift": 1,
    }
    assert n_rejected_rows(counts) == 2
    assert len(clean) == 6
    assert np.isfinite(clean.flux).all() and (clean.ivar >= 0).all()
    assert clean.mask[0, :5].all() and (clean.ivar[0, :5] == 0).all()


def test_reader_counts_wrong_length_rows_missing_columns_and_corrupt_shards(
    tmp_path, ci_grid
) -> None:
    b = generate(5, seed=1, grid=ci_grid)
    good = tmp_path / "good.parquet"
    pq.write_table(b.to_arrow(ci_grid), good)
    # ragged rows: variable-length lists, one spectrum two pixels short
    rows = {
        "targetid": b.targetid.tolist(),
        "z": b.z.tolist(),
        "flux": [r.tolist() for r in b.flux],
        "ivar": [r.tolist() for r in b.ivar],
        "mask": [r.tolist() for r in b.mask],
    }
    for k in ("flux", "ivar", "mask"):
        rows[k][2] = rows[k][2][:-2]
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table(rows), ragged)
    missing = tmp_path / "missing.parquet"
    pq.write_table(b.to_arrow(ci_grid).drop_columns(["ivar"]), missing)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])

    counts: dict[str, int] = {}
    out = list(read_shards([good, ragged, missing, corrupt], ci_grid, counts=counts))
    assert [len(x) for x in out] == [5, 4]
    assert counts == {"wrong_grid_length": 1, "missing_columns": 1, "corrupt_shard": 1}
    with pytest.raises(ShardError) as err:
        read_shard(corrupt)
    assert err.value.reason == "corrupt_shard"
    with pytest.raises(DataError):
        list(read_shards([missing], strict=True))
