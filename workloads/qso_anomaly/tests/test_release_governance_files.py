"""Release files for the governance catalogue: the data card (MAP 2.3), the approver in the
release decision (MEASURE 1.3: a named person or none, never an automated step) and their rows
in the model card's NIST AI RMF mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qso_anomaly.registry.data_card import KNOWN_BIASES, build_data_card
from qso_anomaly.registry.gates import evaluate_gates, load_thresholds
from qso_anomaly.registry.mlflow_registry import (
    RegisteredVersion,
    RegistryError,
    check_approver,
    write_release_decision,
)
from qso_anomaly.registry.nist import rmf_mapping

pytestmark = pytest.mark.unit

RV = RegisteredVersion(name="qso-ae-torch", version="3", run_id="r1", model_uri="models:/m/3")
LINEAGE = {"benchmark": "qso-inject-v1", "generator": "qso-inject-v1", "generator_seed": 5,
           "eval_generator_seed": 6, "n_train_spectra": 160, "data_version": "cd" * 32,
           "data_sha256": {"shard-00000.parquet": "ab" * 32},
           "templates_sha256": {"vandenberk2001_composite_qso.mrt.txt": "a6" * 32,
                                "rrtemplate-QSO-LOZ-v1.1.fits": "9e" * 32}}


def test_approver_is_a_named_person_or_none() -> None:
    assert check_approver(None) is None and check_approver("  ") is None
    assert check_approver("  Dr. A. Reviewer ") == "Dr. A. Reviewer"
    for bad in ("release-gates", "Automatic", "ci", "release gates", "Release_Gates", "CI-bot ",
                "ci ", "Auto.", "pipeline-runner", "--"):
        with pytest.raises(RegistryError, match="is not a person"):
            check_approver(bad)
    for forged in ("Eve\nrelease-gates", "Eve\tMallory", "Eve\x1b[2K"):
        with pytest.raises(RegistryError, match="control character"):
            check_approver(forged)


def test_data_card_has_provenance_biases_and_the_model_version() -> None:
    card = build_data_card(RV, LINEAGE)
    assert card["model_version"] == "3" and card["lineage"]["data_version"] == "cd" * 32
    prov = card["provenance"]
    assert prov["generator_seed"] == 5 and prov["data_files_sha256"] == LINEAGE["data_sha256"]
    cites = {t["file"]: t["citation"] for t in prov["templates"]}
    assert cites["vandenberk2001_composite_qso.mrt.txt"] == "Vanden Berk et al. 2001, AJ 122, 549"
    assert "redrock-templates" in cites["rrtemplate-QSO-LOZ-v1.1.fits"]
    assert len(card["known_biases"]) == len(KNOWN_BIASES) >= 5
    assert all(b["source"] and b["effect"] for b in card["known_biases"])
    text = json.dumps(card["known_biases"], ensure_ascii=False)
    for needle in ("ZWARN", "33.5 %", "fibres", "Ennesser", "Synthetic", "1.5–2"):
        assert needle in text, needle
    unknown = build_data_card(RV, {})        # no lineage: nothing is claimed
    assert unknown["provenance"] == {} and unknown["lineage"] == {}


def test_release_decision_records_the_approver_or_none_and_the_rmf_row_follows(
        tmp_path: Path) -> None:
    th = load_thresholds()
    report = evaluate_gates(th, {"detection": {"overall": {"auroc": 0.9}}})
    path = write_release_decision(tmp_path / "release_decision.json", RV, report,
                                  promoted=False)
    doc = json.loads(path.read_text())
    assert doc["approver"] is None and doc["decided_by"] == "release-gates"
    rows = {r["id"]: r for r in rmf_mapping(tmp_path)}
    assert rows["MEASURE 1.3"]["status"] == "Planned"
    assert rows["MAP 2.3"]["status"] == "Planned"            # no data card yet
    write_release_decision(path, RV, report, promoted=False, approver="Dr. A. Reviewer")
    (tmp_path / "data_card.json").write_text(json.dumps(build_data_card(RV, LINEAGE)))
    rows = {r["id"]: r for r in rmf_mapping(tmp_path)}
    assert json.loads(path.read_text())["approver"] == "Dr. A. Reviewer"
    assert rows["MEASURE 1.3"]["status"] == rows["MAP 2.3"]["status"] == "Implemented"
    with pytest.raises(RegistryError):
        write_release_decision(path, RV, report, promoted=False, approver="automatic")
