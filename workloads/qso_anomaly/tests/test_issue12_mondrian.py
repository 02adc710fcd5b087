"""Issue 12: group-conditional (Mondrian) conformal calibration by observed coverage.

Pure logic (coverage strata, p-value fallback, serialisation) plus one test with the shared tiny
model (session fixture ``robust_model``): masked variants of normal quasars are flagged at a
rate within 2x of unmasked normals and within 2x of α when each spectrum is decided against the
calibration scores of its own coverage stratum. With the pooled calibration (one set of clean
held-out normals, the decision before this change) the same bounds fail for these variants.
"""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.data.grid import DESI_ARMS, WavelengthGrid
from qso_anomaly.train.calibrate import p_values
from qso_anomaly.train.mondrian import (
    LEVELS,
    N_FRACTION_BINS,
    NO_STRATUM,
    UNMASKED,
    MondrianCalibration,
    camera_group,
    copy_names,
    coverage_strata,
    level_counts,
    masking_copies,
    n_min,
    observed_strata,
    stratum_name,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(1800)]  # shared model fixture

WAVE = WavelengthGrid.desi_edr().downsample(4).wave  # the CI grid: 1,946 px


def _code(cameras: str, fbin: int) -> int:
    """Stratum code from a pattern like "br" (z absent) or "b½rz" (b partial) and a bin."""
    pattern = 0
    for arm_i, arm in enumerate("brz"):
        if arm in cameras:
            half = cameras[cameras.index(arm) + 1: cameras.index(arm) + 2] == "½"
            pattern += (1 if half else 2) * 3**arm_i
    return N_FRACTION_BINS * pattern + fbin


def _ivar(n: int = 1) -> np.ndarray:
    return np.ones((n, WAVE.size), np.float32)


def _arm(arm: str) -> np.ndarray:
    lo, hi = DESI_ARMS[arm]
    return (WAVE >= lo) & (WAVE <= hi)


# ---------------------------------------------------------------- strata


def test_strata_of_clean_and_camera_off_spectra() -> None:
    iv = _ivar(6)
    iv[1, _arm("z")] = 0.0                        # z camera off: 37 % of the grid
    iv[2, _arm("b")] = 0.0
    iv[3, :] = 0.0                                # nothing observed
    iv[4, _arm("r")] = np.nan                     # non-finite ivar is not observed
    b = np.where(_arm("b"))[0]
    iv[5, b[: b.size // 2]] = 0.0                 # the blue half of b (an amplifier)
    got = coverage_strata(iv, WAVE)
    assert got.dtype == np.int16
    frac = (iv > 0).mean(axis=1)
    assert 0.5 <= frac[1] < 0.65 and 0.5 <= frac[2] < 0.65 and 0.75 <= frac[5] < 0.85
    assert got.tolist() == [UNMASKED, _code("br", 5), _code("rz", 5), _code("", 6),
                            _code("bz", 4), _code("b½rz", 3)]
    assert [stratum_name(c) for c in got] == ["brz/≥0.975", "br/0.50–0.65", "rz/0.50–0.65",
                                              "none/<0.50", "bz/0.65–0.75", "b½rz/0.75–0.85"]
    assert stratum_name(NO_STRATUM) == "-"
    assert camera_group(got).tolist() == [26, 8, 24, 0, 20, 25]


def test_strata_camera_level_and_fraction_bin_edges() -> None:
    p = WAVE.size
    b_idx = np.where(_arm("b"))[0]
    iv = _ivar(9)
    iv[0, b_idx[: int(0.19 * b_idx.size)]] = 0.0       # b 81 % observed: full
    iv[1, b_idx[: int(0.21 * b_idx.size) + 1]] = 0.0   # b < 80 %: partial
    iv[2, b_idx[: int(0.81 * b_idx.size) + 1]] = 0.0   # b < 20 %: absent
    edges = (0.975, 0.925, 0.85, 0.75, 0.65, 0.5)
    for row, edge in zip(range(3, 9), edges, strict=True):
        iv[row, int(np.ceil(edge * p)):] = 0.0  # exactly at the bin's lower edge (inclusive)
    got = coverage_strata(iv, WAVE)
    assert [(c // N_FRACTION_BINS) % 3 for c in got[:3]] == [2, 1, 0]  # b's level
    frac = (iv > 0).mean(axis=1)
    for row, edge in zip(range(3, 9), edges, strict=True):
        assert frac[row] >= edge and got[row] % N_FRACTION_BINS == row - 3, (row, frac[row])
    iv[8, int(np.ceil(0.5 * p)) - 1:] = 0.0
    assert coverage_strata(iv[8:], WAVE)[0] % N_FRACTION_BINS == 6   # below 0.5
    with pytest.raises(ValueError, match="expected"):
        coverage_strata(iv[:, :-1], WAVE)


def test_observed_strata_matches_ivar_form_on_any_column_order() -> None:
    """The scorer's form (a map of observed pixels) gives the ivar form's codes, and the
    boolean-selection fallback for a grid that is not ascending gives the same codes as the
    contiguous ranges of the ascending grid."""
    rng = np.random.default_rng(12)
    iv = rng.uniform(0.0, 2.0, (300, WAVE.size)).astype(np.float32)
    iv[rng.uniform(size=iv.shape) < 0.1] = 0.0
    for row in range(0, 300, 3):  # blocks of 5-60 % and whole cameras off
        start = int(rng.integers(0, WAVE.size))
        iv[row, start:start + int(rng.uniform(0.05, 0.6) * WAVE.size)] = 0.0
        iv[row + 1, _arm("brz"[row % 3])] = 0.0
    iv[0, :5] = np.inf
    iv[1, :5] = np.nan
    want = coverage_strata(iv, WAVE)
    assert len(set(want.tolist())) > 10  # the rows reach many strata
    assert np.array_equal(observed_strata(np.isfinite(iv) & (iv > 0), WAVE), want)
    perm = rng.permutation(WAVE.size)
    assert np.array_equal(coverage_strata(iv[:, perm], WAVE[perm]), want)
    with pytest.raises(ValueError, match="expected"):
        observed_strata(iv[:, :-1] > 0, WAVE)


# ---------------------------------------------------------------- p-values and fallback


def _calibration() -> MondrianCalibration:
    rng = np.random.default_rng(0)
    parts = {  # stratum: (n, score offset)
        UNMASKED: (150, 0.0),          # own set large enough at α = 0.01
        _code("br", 5): (50, 3.0),     # too small alone, its pattern group "br" has 50 + 60
        _code("br", 4): (60, 3.0),
        _code("b", 5): (10, 6.0),      # pattern group "b" has 10: pooled
    }
    scores = np.concatenate([rng.normal(off, 1.0, n) for n, off in parts.values()])
    strata = np.concatenate([np.full(n, c, np.int16) for c, (n, _) in parts.items()])
    return MondrianCalibration(scores, strata)


def test_n_min_is_the_smallest_set_that_reaches_alpha() -> None:
    assert n_min(0.01) == 99 and n_min(0.05) == 19 and n_min(0.1) == 9 and n_min(0.02) == 49
    for a in (0.01, 0.02, 0.05, 0.1):
        assert 1.0 / (n_min(a) + 1) <= a < 1.0 / n_min(a)


def test_p_values_use_own_stratum_then_camera_group_then_pooled() -> None:
    cal = _calibration()
    s = np.array([0.5, 2.5, 3.5, 3.0, 7.0, 1.0, 2.0, np.nan])
    st = np.array([UNMASKED, UNMASKED, _code("br", 5), _code("br", 4), _code("b", 5),
                   _code("rz", 1), NO_STRATUM, UNMASKED])
    p, level = cal.p_values(s, st, 0.01)
    own = cal.scores[cal.strata == UNMASKED]
    group = cal.scores[camera_group(cal.strata) == camera_group(np.array([_code("br", 0)]))[0]]
    assert [LEVELS[i] for i in level] == ["stratum", "stratum", "cameras", "cameras", "pooled",
                                          "pooled", "pooled", "stratum"]
    np.testing.assert_array_equal(p[:2], p_values(own, s[:2]))
    np.testing.assert_array_equal(p[2:4], p_values(group, s[2:4]))
    np.testing.assert_array_equal(p[4:7], p_values(cal.scores, s[4:7]))
    assert np.isnan(p[7])
    assert level_counts(level) == {"stratum": 3, "cameras": 2, "pooled": 3}
    # at α = 0.05 (n_min 19) the "br" strata are large enough on their own
    _, level05 = cal.p_values(s, st, 0.05)
    assert [LEVELS[i] for i in level05[2:5]] == ["stratum", "stratum", "pooled"]
    flags = cal.flags(s, st, 0.01)
    assert flags.tolist() == (np.nan_to_num(p, nan=2.0) <= 0.01).tolist()
    rows = {r["name"]: r for r in cal.thresholds(0.01)}
    assert rows["br/0.50–0.65"]["level"] == "cameras"
    assert rows["br/0.50–0.65"]["n_used"] == 110
    assert rows["b/0.50–0.65"]["level"] == "pooled" and rows["b/0.50–0.65"]["n"] == 10


def test_pooled_only_calibration_is_the_previous_decision() -> None:
    ref = np.random.default_rng(1).normal(size=300)
    cal = MondrianCalibration.pooled(ref)
    s = np.linspace(-3, 4, 50)
    p, level = cal.p_values(s, np.full(50, UNMASKED), 0.01)
    np.testing.assert_array_equal(p, p_values(ref, s))
    assert (level == LEVELS.index("pooled")).all()
    assert cal.summary(0.01)["method"] == "split-conformal"
    assert MondrianCalibration.from_arrays(cal.to_arrays()).strata is None


def test_masking_copies_are_deterministic_and_cover_the_instrument_states() -> None:
    rng = np.random.default_rng(3)
    flux = rng.normal(size=(40, WAVE.size)).astype(np.float32)
    iv = _ivar(40)
    a = list(masking_copies(flux, iv, WAVE, seed=5))
    b = list(masking_copies(flux, iv, WAVE, seed=5))
    c = list(masking_copies(flux, iv, WAVE, seed=6))
    assert [n for n, _, _ in a] == copy_names()
    for (_, fa, ia), (_, fb, ib) in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(ia, ib)
    assert any(not np.array_equal(x[2], y[2]) for x, y in zip(a, c, strict=True))
    names = {n: coverage_strata(i, WAVE) for n, _, i in a}
    assert set(names["z camera off"].tolist()) == {_code("br", 5)}
    assert set(names["b blue half off"].tolist()) == {_code("b½rz", 3)}
    assert set((names["20% block"] % N_FRACTION_BINS).tolist()) == {3}  # 0.75–0.85
    assert all((f[i <= 0] == 0).all() for _, f, i in a)


# ---------------------------------------------------------------- with the tiny model


def test_fit_records_the_stratified_calibration(robust_model) -> None:  # type: ignore[no-untyped-def]
    cal = robust_model.metrics["calibration"]
    assert cal["method"] == "mondrian-conformal" and cal["n_min"] == 99
    assert cal["n_calibration"] == robust_model.reference_scores.size   # pooled unmasked set
    assert cal["copies"][0] == "clean" and len(cal["copies"]) == 1 + len(copy_names())
    tm_cal = robust_model.calibration
    assert tm_cal is not None and tm_cal.stratified
    assert tm_cal.scores.size == cal["n_pooled"] == (
        len(cal["copies"]) * robust_model.reference_scores.size)
    rows = {r["name"]: r for r in cal["strata"]}
    # every camera-off state a DESI spectrum meets has its own full stratum
    for name in ("brz/≥0.975", "br/0.50–0.65", "rz/0.50–0.65", "bz/0.65–0.75"):
        assert rows[name]["n"] >= 99 and rows[name]["level"] == "stratum", rows[name]


def test_save_load_round_trip_and_model_without_strata(tmp_path, robust_model) -> None:  # type: ignore[no-untyped-def]
    from qso_anomaly.train.trained import CALIBRATION_FILE, TrainedModel

    d = robust_model.save(tmp_path / "m")
    back = TrainedModel.load(d)
    assert back.calibration is not None
    np.testing.assert_array_equal(back.calibration.strata, robust_model.calibration.strata)
    np.testing.assert_allclose(back.calibration.scores, robust_model.calibration.scores,
                               rtol=1e-6)
    (d / CALIBRATION_FILE).unlink()              # a model saved before strata existed
    old = TrainedModel.load(d)
    assert old.calibration is None
    s = np.linspace(-2, 6, 40)
    p, level = old.flag_calibration().p_values(s, np.full(40, _code("br", 3)), 0.01)
    np.testing.assert_array_equal(p, p_values(old.reference_scores, s))
    assert (level == LEVELS.index("pooled")).all()


ALPHA = 0.02
VARIANT_NAMES = ("z camera masked", "20% contiguous block", "35% contiguous block")


@pytest.fixture(scope="module")
def variant_scores(robust_model, ci_grid):  # type: ignore[no-untyped-def]
    """Scores and strata of 3,000 normal quasars (not trained on), unmasked and per variant."""
    from qso_anomaly.bench.robustness import VARIANTS
    from qso_anomaly.data.synth import generate
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.models.scoring import score_torch

    normals = clean_batch(generate(3000, 13, ci_grid, anomaly_fraction=0.0))[0]
    base = normals.with_arrays(meta={**normals.meta, "wave": ci_grid.wave})
    model = robust_model.torch_model()
    out = {}
    for name in ("unmasked", *VARIANT_NAMES):
        v = VARIANTS[name]
        b = base if v is None else v(base, np.random.default_rng(0))
        out[name] = (score_torch(model, b).score, coverage_strata(b.ivar, ci_grid.wave))
    return out


def flag_rates(calibration: MondrianCalibration, variant_scores) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {name: float(np.mean(calibration.flags(s, st, ALPHA)))
            for name, (s, st) in variant_scores.items()}


def test_masked_normals_flag_rate_within_2x_of_unmasked(robust_model, variant_scores) -> None:  # type: ignore[no-untyped-def]
    rates = flag_rates(robust_model.flag_calibration(), variant_scores)
    base = rates["unmasked"]
    assert 0.5 * ALPHA <= base <= 2 * ALPHA, rates
    for name in VARIANT_NAMES:
        assert rates[name] <= 2 * base and rates[name] <= 2 * ALPHA, (name, rates)


def test_scorer_writes_the_stratum_and_the_run_decides_per_stratum(
        tmp_path, robust_model, normal_test_batch, ci_grid) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from qso_anomaly.data.synth import write_batch
    from qso_anomaly.metrics import ScoringMetrics
    from qso_anomaly.score import score_shards
    from qso_anomaly.score.run import load_scored

    b = normal_test_batch.take(slice(0, 60))
    ivar, flux = b.ivar.copy(), b.flux.copy()
    z_cam = (ci_grid.wave >= DESI_ARMS["z"][0])[None, :] & (np.arange(60) < 30)[:, None]
    ivar[z_cam], flux[z_cam] = 0.0, 0.0
    b = b.with_arrays(ivar=ivar, flux=flux, mask=b.mask | z_cam)
    (tmp_path / "in").mkdir()
    shard = write_batch(b, tmp_path / "in" / "s0.parquet", ci_grid)
    summary = score_shards(robust_model, [shard], tmp_path / "scores")
    table = pq.read_table(summary.outputs[0])
    want = coverage_strata(ivar, ci_grid.wave)
    assert table.column("stratum").to_numpy().tolist() == want.tolist()
    assert set(want[:30].tolist()) == {_code("br", 5)}
    assert set((want[30:] // N_FRACTION_BINS).tolist()) == {26}  # b, r, z full
    cal = robust_model.flag_calibration()
    run = load_scored(summary.outputs, [shard], robust_model.reference_scores, 0.0,
                      calibration=cal, alpha=ALPHA)
    p, _ = cal.p_values(run.score, want, ALPHA)
    np.testing.assert_array_equal(run.p_value, p)
    assert run.n_flagged == int(np.sum(p <= ALPHA))
    fs = run.flag_summary()
    assert sum(r["n"] for r in fs["strata"]) == 60 and sum(fs["levels"].values()) == 60
    # outputs without the column (written before it existed) are decided pooled
    pq.write_table(table.drop(["stratum"]), tmp_path / "old.scores.parquet")
    old = load_scored([tmp_path / "old.scores.parquet"], [shard], robust_model.reference_scores,
                      0.0, calibration=cal, alpha=ALPHA)
    np.testing.assert_array_equal(old.p_value, p_values(cal.scores, old.score))
    # the live counter makes the same decision
    m = ScoringMetrics(model="m", version="1", framework="torch", flag_threshold=0.0,
                       flag_calibration=cal, flag_alpha=ALPHA)
    m.observe_batch(run.score, 0.1, strata=want)
    got = m.registry.get_sample_value("anomaly_flagged_total", {"model": "m", "version": "1"})
    assert got == run.n_flagged
