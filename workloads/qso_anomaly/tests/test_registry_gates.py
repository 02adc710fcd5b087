"""Thresholds file parsing, gate evaluation, bootstrap evaluation and model-card rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qso_anomaly.registry.evaluation import evaluate_detection
from qso_anomaly.registry.gates import (
    ThresholdsError,
    evaluate_gates,
    load_thresholds,
    lookup,
)
from qso_anomaly.registry.model_card import ModelCard

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[1] / "release" / "thresholds.yaml"


def _evidence(auroc: float = 0.9, randomisation_passed: bool = True) -> dict:
    return {
        "detection": {"overall": {"auroc": auroc, "ap_lift": 6.0, "auroc_ci_low": auroc - 0.03},
                      "min_class_auroc": 0.7, "max_auroc_gap_snr_bin": 0.1,
                      "max_auroc_gap_z_bin": 0.2},
        "xai": {"localisation_auroc_localised_mean": 0.9, "deletion_gain": 0.2,
                "randomisation": {"passed": randomisation_passed}},
        "drift": {"psi": 0.02},
        "card": {"complete": True},
    }


def test_shipped_thresholds_file_parses_with_both_tiers() -> None:
    th = load_thresholds(SHIPPED)
    assert th.default_tier == "ci"
    assert set(th.tiers) == {"ci", "production"}
    assert 0.9 < th.flag_quantile < 1.0
    ids = {g.id for g in th.gates("production")}
    assert {"no_class_below_chance", "xai_randomisation", "max_score_psi"} <= ids
    assert all(g.rmf for g in th.gates("production"))


def test_all_gates_pass_on_good_evidence() -> None:
    report = evaluate_gates(load_thresholds(SHIPPED), _evidence(), tier="production")
    assert report.passed, report.failed
    assert report.to_dict()["passed"] is True


def test_a_failing_metric_and_a_missing_metric_each_fail_their_gate() -> None:
    th = load_thresholds(SHIPPED)
    bad = _evidence(auroc=0.55, randomisation_passed=False)
    report = evaluate_gates(th, bad, tier="production")
    failed = {g.id for g in report.failed}
    assert failed == {"overall_auroc", "overall_auroc_ci_low", "xai_randomisation"}
    assert not report.passed
    missing = _evidence()
    del missing["drift"]
    rep2 = evaluate_gates(th, missing, tier="ci")
    assert [g.id for g in rep2.failed] == ["max_score_psi"]
    assert "missing" in rep2.failed[0].reason
    nan = _evidence()
    nan["drift"]["psi"] = float("nan")
    assert [g.id for g in evaluate_gates(th, nan).failed] == ["max_score_psi"]


def test_malformed_thresholds_are_rejected_with_location(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tiers:\n  ci:\n    - {id: a, metric: x, op: '=>', value: 1}\n")
    with pytest.raises(ThresholdsError, match=r"tiers\.ci\[0\]: op"):
        load_thresholds(p)
    p.write_text("tiers: {}\n")
    with pytest.raises(ThresholdsError, match="non-empty 'tiers'"):
        load_thresholds(p)
    with pytest.raises(ThresholdsError, match="not found"):
        load_thresholds(tmp_path / "nope.yaml")
    with pytest.raises(ThresholdsError, match="no gates"):
        load_thresholds(SHIPPED).gates("high")


def test_lookup_walks_dotted_paths() -> None:
    assert lookup({"a": {"b": {"c": 3}}}, "a.b.c") == 3
    assert lookup({"a": {"b": 1}}, "a.x") is None


@pytest.fixture(scope="module")
def detection() -> dict:
    rng = np.random.default_rng(0)
    n = 1200
    labels = np.array(["normal"] * n, dtype=object)
    labels[:60] = "hibal"
    labels[60:120] = "star"
    scores = rng.normal(size=n)
    scores[:60] += 3.0  # easy class
    scores[60:120] += 0.5  # hard class
    snr = rng.uniform(0.5, 10.0, n)
    z = rng.uniform(0.1, 3.5, n)
    return evaluate_detection(scores, labels.astype(str), snr=snr, z=z, n_boot=100, seed=1)


def test_evaluation_has_per_class_and_per_bin_metrics_with_cis(detection: dict) -> None:
    assert set(detection["per_class"]) == {"hibal", "star"}
    easy, hard = detection["per_class"]["hibal"], detection["per_class"]["star"]
    assert easy["auroc"] > 0.95 > hard["auroc"] > 0.55
    lo, hi = easy["auroc_ci"]
    assert lo <= easy["auroc"] <= hi
    assert hard["auroc_ci"][1] - hard["auroc_ci"][0] > 0.02
    assert detection["min_class_auroc"] == pytest.approx(hard["auroc"])
    assert list(detection["per_snr_bin"]) == ["[0,1)", "[1,2.33)", "[2.33,5)", ">=5"]
    assert len(detection["per_z_bin"]) == 4
    assert detection["overall"]["ap_lift"] > 1.0
    assert detection["k"] == 12


def test_model_card_renders_and_maps_nist_rmf(detection: dict, tmp_path: Path) -> None:
    (tmp_path / "thresholds.yaml").write_text(SHIPPED.read_text())
    (tmp_path / "xai_report.json").write_text("{}")
    report = evaluate_gates(load_thresholds(SHIPPED), _evidence())
    card = ModelCard(
        model_details={"name": "qso-ae-torch", "version": "1", "framework": "torch"},
        data_lineage={"generator": "qso-inject-v1", "seed": 7, "templates": {"a.fits": "ab12"}},
        quantitative_analysis=detection,
        xai={"method": "ig", "randomisation": {"passed": True, "spearman_abs_mean": 0.1},
             "per_class": {"hibal": {"n": 3, "localised": True, "auroc_mean": 0.9,
                                     "relevance_mass_mean": 0.5, "pointing_game_mean": 1.0}}},
        gates=report.to_dict(),
    )
    assert card.complete
    paths = card.write(tmp_path)
    md = Path(paths["markdown"]).read_text()
    for text in ("## Intended use", "Out of scope", "class hibal", "S/N", "MEASURE 2.9",
                 "MAP 1.5", "GOVERN 1.3", "## Limitations", "PASSED", "a.fits"):
        assert text in md, text
    data = json.loads(Path(paths["json"]).read_text())
    rmf = {r["id"]: r for r in data["nist_ai_rmf"]}
    assert rmf["MEASURE 2.9"]["status"] == "Implemented"
    assert rmf["MAP 1.5"]["evidence_present"] is True
    assert rmf["MANAGE 1.1"]["status"] == "Planned"  # no release_decision.json written here
    assert rmf["MAP 1.1"]["status"] == "Implemented"  # the card itself
    assert data["complete"] is True
    empty = ModelCard(model_details={}, data_lineage={}, quantitative_analysis={})
    assert set(empty.missing_sections()) == {"data_lineage", "quantitative_analysis"}
