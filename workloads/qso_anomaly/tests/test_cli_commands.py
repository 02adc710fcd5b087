"""``qso-anomaly`` subcommands chained on tiny data, plus argument errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qso_anomaly.cli import main

pytestmark = [pytest.mark.timeout(1500)]


def _call(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    rc = main(list(args))
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.mark.integration
@pytest.mark.slow
def test_synth_train_score_explain_report_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    train = _call(capsys, "synth", "--out", str(tmp_path / "train"), "--n", "160", "--seed",
                  "1", "--shard-size", "80", "--anomaly-fraction", "0.02")
    assert len(train["shards"]) == 2 and train["npix"] == 1946
    survey = _call(capsys, "synth", "--out", str(tmp_path / "survey"), "--n", "100", "--seed",
                   "2", "--anomaly-fraction", "0.3")
    model = _call(capsys, "train", "--data", str(tmp_path / "train"), "--out",
                  str(tmp_path / "model"), "--epochs", "1", "--register")
    assert Path(model["model_dir"], "model.pt").is_file()
    assert model["registered"]["version"] == "1"
    assert "candidate" in model["registered"]["aliases"]

    scored = _call(capsys, "score", "--model", model["model_dir"], "--data",
                   str(tmp_path / "survey"), "--out", str(tmp_path / "scored"))
    assert scored["n_scored"] == 100 and len(survey["shards"]) == 1
    fams = {f.name: f for f in text_string_to_metric_families(
        Path(scored["metrics"]).read_text())}
    assert [s.value for s in fams["anomaly_inference_requests"].samples
            if s.labels.get("outcome") == "ok"] == [100]
    assert scored["drift"]["n_current"] == 100

    ex = _call(capsys, "explain", "--model", model["model_dir"], "--data",
               str(tmp_path / "survey"), "--scores", scored["scores"], "--out",
               str(tmp_path / "explain"), "--top-k", "2", "--ig-steps", "8")
    assert ex["n_explained"] >= 2 and Path(ex["xai_report"]).is_file()
    assert ex["randomisation"]["passed"] in (True, False)

    rep = _call(capsys, "report", "--model", model["model_dir"], "--data",
                str(tmp_path / "survey"), "--scores", scored["scores"], "--explain",
                str(tmp_path / "explain"), "--out", str(tmp_path / "report.html"))
    html = Path(rep["report"]).read_text()
    assert 'id="xai"' in html and 'id="performance"' in html
    assert len(re.findall("data:image/png", html)) >= 4

    bench = _call(capsys, "benchmark", "--model", model["model_dir"], "--n", "150",
                  "--per-class", "1", "--ig-steps", "8", "--out", str(tmp_path / "bench"))
    assert bench["n_explained"] >= 5 and bench["per_class"]
    assert (tmp_path / "bench" / "xai_benchmark.json").is_file()

    # Registry round trip: score straight from models:/name@alias.
    uri = model["tracking_uri"]
    rc = main(["score", "--model-uri", "qso-ae-torch@candidate", "--tracking-uri", uri,
               "--data", str(tmp_path / "survey"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "models:/<name>@<alias>" in capsys.readouterr().err
    again = _call(capsys, "score", "--model-uri", "models:/qso-ae-torch@candidate",
                  "--tracking-uri", uri, "--data", str(tmp_path / "survey"), "--out",
                  str(tmp_path / "scored2"))
    assert again["n_scored"] == 100


@pytest.mark.unit
def test_bad_model_dir_is_one_clear_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["score", "--model", str(tmp_path), "--data", str(tmp_path / "none"), "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err


@pytest.mark.unit
def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "qso-anomaly 0." in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("synth", "train", "score", "explain", "report", "benchmark", "pipeline"):
        assert cmd in out
