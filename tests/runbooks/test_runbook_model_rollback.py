"""The model-rollback runbook on the local stack's MLflow registry: the alias moves back to the
previous released version and the next scoring run uses it (workload's public registry API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyrig.governance.registry import Registry
from skyrig.runbooks.execute import DEFAULT_MODEL_NAME, execute, read_record, tracking_uri
from skyrig.runbooks.parse import find_runbook
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
GOOD_EVAL = {"n": 600, "k": 6, "per_class": {}, "per_snr_bin": {}, "per_z_bin": {},
             "overall": {"n": 600, "n_positive": 60, "auroc": 0.9, "auroc_ci": [0.85, 0.95],
                         "average_precision": 0.5, "average_precision_ci": [0.4, 0.6],
                         "ap_lift": 5.0}}
GOOD_XAI = {"localisation_auroc_localised_mean": 0.9, "randomisation": {"passed": True}}


def release(registry: Any, model_dir: Path, out: Path, n: int) -> Any:
    """Register and release one version through the workload's own release step."""
    from qso_anomaly.registry.gates import load_thresholds
    from qso_anomaly.registry.release import release_version

    rv = registry.register(model_dir=model_dir, model_name=DEFAULT_MODEL_NAME,
                           params={"n": n}, tags={"workload_version": "0.1.0"})
    outcome = release_version(
        registry, rv, thresholds=load_thresholds(), release_dir=out / f"release-{n}",
        evaluation=GOOD_EVAL, drift={"psi": 0.01}, xai=GOOD_XAI,
        model_details={"name": rv.name, "version": rv.version, "task": "anomaly detection",
                       "architecture": "tiny", "framework": "torch"},
        data_lineage={"data_version": "ab" * 32})
    assert outcome.promoted
    return outcome.version


def test_model_rollback_runbook_moves_the_alias_and_scoring_follows(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qso_anomaly.cli import main as qso_main
    from qso_anomaly.data.synth import write_survey
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.registry.mlflow_registry import ModelRegistry
    from qso_anomaly.train import fit

    st = stack(root, "local")
    (st.state_dir / "mlflow").mkdir(parents=True)
    uri = tracking_uri(st)
    spec = ModelSpec.ci()
    grid = spec.input_grid()
    shards = write_survey(tmp_path / "train", 120, 3, shard_size=120, grid=grid)
    trained = fit(spec, grid, shards, use_ray=False, epochs=1, seed=0)
    trained.save(tmp_path / "model")
    registry = ModelRegistry(uri)
    v1 = release(registry, tmp_path / "model", tmp_path, 1)
    v2 = release(registry, tmp_path / "model", tmp_path, 2)
    assert (v1.version, v2.version) == ("1", "2")
    assert registry.resolve_alias(DEFAULT_MODEL_NAME, "champion").version == "2"

    book = find_runbook(RUNBOOKS, "model-rollback")
    res = execute(book, st, variables={"reason": "drift after v2; $(id) literal"}, yes=True)
    assert res.status == "succeeded", [(s.step, s.status, s.output_tail) for s in res.steps]
    assert registry.resolve_alias(DEFAULT_MODEL_NAME, "champion").version == "1"
    reg = Registry(uri, DEFAULT_MODEL_NAME)
    assert "rolled_back_at" in reg.get("2").tags
    hist = reg.history("champion")
    assert hist[-1]["from"] == "2" and hist[-1]["to"] == "1"
    assert hist[-1]["reason"] == "drift after v2; $(id) literal"
    steps = {ln["step"]: ln for ln in read_record(res.record) if ln["event"] == "step"}
    assert "version 2 → 1" in steps["rollback"]["output_tail"]

    # the next scoring run resolves the alias to the previous version
    survey = write_survey(tmp_path / "survey", 60, 4, shard_size=60, grid=grid)
    capsys.readouterr()
    rc = qso_main(["score", "--model-uri", f"models:/{DEFAULT_MODEL_NAME}@champion",
                   "--tracking-uri", uri, "--data", str(survey[0].parent),
                   "--out", str(tmp_path / "scored")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_scored"] == 60
    prom = Path(out["metrics"]).read_text()
    info = [ln for ln in prom.splitlines() if ln.startswith("anomaly_model_info{")]
    assert info and 'version="1"' in info[0], info

    # a second rollback has nowhere to go (version 1 is the oldest released version)
    again = execute(book, st, yes=True)
    assert again.status == "failed" and again.failed_step == "rollback"
    assert "no older version with release_decision=go" in next(
        s for s in again.steps if s.step == "rollback").output_tail
    assert registry.resolve_alias(DEFAULT_MODEL_NAME, "champion").version == "1"
