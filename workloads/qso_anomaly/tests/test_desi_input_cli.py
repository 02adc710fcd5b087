"""``qso-anomaly score``, ``explain`` and ``report`` take DESI healpix coadds + redrock files
(a directory here) through the same reader and data policy, and report the counts by reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qso_test_support import write_desi_healpix

from qso_anomaly.cli import main

pytestmark = [pytest.mark.unit, pytest.mark.timeout(1800)]  # shared model fixture: ~25 s idle


def _call(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    rc = main(list(args))
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1])


def test_score_explain_report_accept_a_desi_healpix_directory(
        tmp_path: Path, robust_model, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    hp = tmp_path / "healpix"
    write_desi_healpix(hp, 24, 43, n_zwarn=3)
    model = str(robust_model.save(tmp_path / "model"))
    scored = _call(capsys, "score", "--model", model, "--data", str(hp), "--out",
                   str(tmp_path / "scored"))
    assert scored["rejected_on_read"]["zwarn"] == 3 and scored["n_scored"] <= 21
    prom = Path(scored["metrics"]).read_text()
    assert 'anomaly_input_rejected_total{reason="zwarn"} 3.0' in prom

    coadd = next(hp.glob("coadd-*.fits"))
    redrock = next(hp.glob("redrock-*.fits"))
    ex = _call(capsys, "explain", "--model", model, "--data", str(coadd), "--redshifts",
               str(redrock), "--scores", scored["scores"], "--out", str(tmp_path / "explain"),
               "--top-k", "2", "--ig-steps", "4")
    assert ex["n_explained"] == 2 and ex["rejected_on_read"]["zwarn"] == 3

    rep = _call(capsys, "report", "--model", model, "--data", str(hp), "--scores",
                scored["scores"], "--explain", str(tmp_path / "explain"), "--out",
                str(tmp_path / "report.html"))
    html = Path(rep["report"]).read_text()
    assert rep["n_scored"] == scored["n_scored"]
    assert "rejected: zwarn" in html and 'id="xai"' in html
