"""The Ray-job entrypoint end to end on tiny data (local mode, no Ray), run as a subprocess-like
call of ``pipeline.main`` so the final JSON line is what skyrig would parse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qso_anomaly.pipeline import PipelineConfig, config_from_args, main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

LENIENT = """
default_tier: ci
flag_quantile: 0.95
tiers:
  ci:
    - {id: overall_auroc, metric: detection.overall.auroc, op: ">=", value: 0.0}
    - {id: xai_randomisation, metric: xai.randomisation.passed, op: "==", value: true}
    - {id: card, metric: card.complete, op: "==", value: true}
"""
STRICT = LENIENT.replace('op: ">=", value: 0.0', 'op: ">=", value: 1.01')
TINY = ["--n-spectra", "120", "--n-train", "160", "--epochs", "1", "--top-k", "3",
        "--seed", "5"]


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict:
    rc = main(args)
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    return json.loads(out[-1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pipe")
    (d / "lenient.yaml").write_text(LENIENT)
    (d / "strict.yaml").write_text(STRICT)
    return d


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> dict:
    import io
    import sys

    buf, old = io.StringIO(), sys.stdout
    sys.stdout = buf
    try:
        rc = main(["--out", str(workdir / "run1"), "--thresholds", str(workdir / "lenient.yaml"),
                   "--model-alias", "champion", "--tracking-uri",
                   f"sqlite:///{workdir / 'mlflow.db'}", *TINY])
    finally:
        sys.stdout = old
    assert rc == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def test_first_run_trains_registers_and_promotes(first_run: dict) -> None:
    m = first_run["model"]
    assert m["trained"] is True and m["promoted"] is True
    assert m["name"] == "qso-ae-torch" and m["version"] == "1" and m["alias"] == "champion"
    assert set(m["aliases"]) == {"candidate", "champion"}
    assert first_run["gates_passed"] is True
    assert first_run["n_scored"] > 100
    assert first_run["xai"]["randomisation_passed"] is True
    # the drift of the labelled normal spectra (what the release gate checks) comes with the
    # drift of all scores (which the survey's injected anomalies shift by design)
    normal, every = first_run["drift_normal"], first_run["drift"]
    assert 0 < normal["n_current"] < every["n_current"] == first_run["n_scored"]


def test_first_run_outputs_exist_and_are_consistent(first_run: dict) -> None:
    report = Path(first_run["report"]).read_text()
    assert len(re.findall(r"data:image/png;base64", report)) >= 5
    assert 'id="gates"' in report and 'id="xai"' in report
    families = {f.name: f for f in text_string_to_metric_families(
        Path(first_run["metrics"]).read_text())}
    count = [s.value for s in families["anomaly_score"].samples
             if s.name == "anomaly_score_count"]
    assert count == [first_run["n_scored"]]
    assert "anomaly_model_info" in families and "anomaly_score_psi" in families
    explained = [s.value for s in families["anomaly_explanations"].samples
                 if s.name == "anomaly_explanations_total"]
    release = Path(first_run["model_card"]).parent
    xai = json.loads((release / "xai_report.json").read_text())
    assert explained == [xai["n_explained"]] and xai["n_explained"] >= 3  # top-3 + per class
    card = Path(first_run["model_card"]).read_text()
    assert "NIST AI RMF" in card and "Intended use" in card and "version 1" in card
    for name in ("evidence.json", "xai_report.json", "thresholds.yaml", "release_decision.json",
                 "model_card.json", "metrics.prom", "data_card.json"):
        assert (release / name).is_file(), name
    decision = json.loads((release / "release_decision.json").read_text())
    assert decision["decision"] == "go" and decision["promoted_to"] == "champion"
    assert decision["approver"] is None  # no --approver: no human approver is recorded
    evidence = json.loads((release / "evidence.json").read_text())
    assert set(evidence["detection"]["baselines"]) >= {"pca_chi2", "pca_iforest", "comparison"}


def test_second_run_scores_with_the_champion_instead_of_training(
    first_run: dict, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    res = _run(capsys, ["--out", str(workdir / "run2"), "--thresholds",
                        str(workdir / "lenient.yaml"), "--model-alias", "champion",
                        "--tracking-uri", first_run["tracking_uri"], *TINY])
    assert res["model"]["trained"] is False and res["model"]["version"] == "1"
    assert res["model"]["alias"] == "champion"
    assert "train" not in res["timings_s"]
    assert res["model_card"] and Path(res["model_card"]).read_text().startswith("# Model card")
    assert Path(res["report"]).is_file()


def test_champion_scores_desi_coadds_with_the_data_policy_counts_in_the_report(
    first_run: dict, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from qso_test_support import write_desi_healpix

    write_desi_healpix(workdir / "healpix", 40, 17, n_zwarn=4)
    res = _run(capsys, ["--out", str(workdir / "run-desi"), "--thresholds",
                        str(workdir / "lenient.yaml"), "--model-alias", "champion",
                        "--tracking-uri", first_run["tracking_uri"], "--data",
                        str(workdir / "healpix"), *TINY])
    assert res["model"]["trained"] is False and res["input"] == "desi"
    assert res["rejected_on_read"]["zwarn"] == 4
    assert res["n_scored"] + sum(v for k, v in res["rejected"].items()
                                 if not k.startswith("masked_pixels:")) == 36
    assert res["xai"]["localisation_auroc_localised_mean"] is None  # no injection masks
    html = Path(res["report"]).read_text()
    assert "rejected: zwarn" in html
    prom = Path(res["metrics"]).read_text()
    assert 'anomaly_input_rejected_total{reason="zwarn"} 4.0' in prom


def test_failing_gate_keeps_the_old_champion(
    first_run: dict, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    res = _run(capsys, ["--out", str(workdir / "run3"), "--thresholds",
                        str(workdir / "strict.yaml"), "--tracking-uri",
                        first_run["tracking_uri"], *TINY])
    assert res["model"]["trained"] is True and res["model"]["version"] == "2"
    assert res["model"]["promoted"] is False and res["model"]["alias"] == "candidate"
    assert res["gates_passed"] is False
    decision = json.loads((Path(res["model_card"]).parent / "release_decision.json").read_text())
    assert decision["decision"] == "no-go"
    from qso_anomaly.registry.mlflow_registry import ModelRegistry

    reg = ModelRegistry(first_run["tracking_uri"])
    assert reg.resolve_alias("qso-ae-torch", "champion").version == "1"  # type: ignore[union-attr]


def test_config_file_and_flags_merge(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"out": "x", "n_spectra": 50, "model_alias": "champion"}))
    cfg = config_from_args(["--config", str(job), "--n-spectra", "70"])
    assert cfg.out == "x" and cfg.n_spectra == 70 and cfg.model_alias == "champion"
    job.write_text(json.dumps({"bogus": 1}))
    from qso_anomaly.pipeline import PipelineError

    with pytest.raises(PipelineError, match="unknown options"):
        PipelineConfig.from_json(job)


def test_version_pin_mismatch_exits_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(["--out", str(tmp_path / "o"), "--expect-version", "0.0.0-nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "workload version mismatch" in err and "0.0.0-nope" in err
