"""A release produced by the workload's pipeline carries the evidence skyrig's governance check
asks for: the data card (MAP 2.3), the evaluation with its baselines (MEASURE 2.1) and, when a
person is named with ``--approver``, the human approver (MEASURE 1.3). Without an approver the
check reports MEASURE 1.3 missing — the pipeline never invents one."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from skyrig.config import Stack
from skyrig.governance import check_stack
from skyrig.runbooks.execute import tracking_uri
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LENIENT = """
default_tier: ci
flag_quantile: 0.95
tiers:
  ci:
    - {id: overall_auroc, metric: detection.overall.auroc, op: ">=", value: 0.0}
    - {id: card, metric: card.complete, op: "==", value: true}
"""
TINY = ["--n-spectra", "150", "--n-train", "160", "--epochs", "1", "--top-k", "2",
        "--xai-per-class", "1", "--seed", "7"]
ITEMS = ("MAP 2.3", "MEASURE 2.1", "MEASURE 1.3")


def _pipeline(st: Stack, out: Path, *extra: str) -> dict:
    from qso_anomaly.pipeline import main

    buf, old = io.StringIO(), sys.stdout
    sys.stdout = buf
    try:
        rc = main(["--out", str(out), "--thresholds", str(out.parent / "lenient.yaml"),
                   "--tracking-uri", tracking_uri(st), *TINY, *extra])
    finally:
        sys.stdout = old
    assert rc == 0, buf.getvalue()[-2000:]
    return json.loads(buf.getvalue().strip().splitlines()[-1])


@pytest.fixture
def st(root: Path) -> Stack:
    s = stack(root, "local")
    (s.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    return s


def test_pipeline_release_with_an_approver_satisfies_map_2_3_measure_2_1_and_1_3(
        st: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSO_RELEASE_APPROVER", raising=False)
    (tmp_path / "lenient.yaml").write_text(LENIENT)

    first = _pipeline(st, tmp_path / "run1", "--approver", "Dr. A. Reviewer")
    assert first["model"]["promoted"] and first["approver"] == "Dr. A. Reviewer"
    release = Path(first["model_card"]).parent
    card = json.loads((release / "data_card.json").read_text())
    assert card["model_version"] == "1" and card["provenance"]["templates"]
    assert {"DESI QSO target selection", "Redrock redshift failures and the ZWARN cut",
            "Fibre assignment incompleteness"} <= {b["name"] for b in card["known_biases"]}
    baselines = json.loads((release / "evidence.json").read_text())["detection"]["baselines"]
    for name in ("pca_chi2", "pca_iforest"):
        assert 0.0 <= baselines[name]["overall"]["auroc"] <= 1.0
    items = {i.id: i for i in check_stack(st).items}
    assert {i: items[i].status for i in ITEMS} == dict.fromkeys(ITEMS, "satisfied"), [
        (i, items[i].detail) for i in ITEMS]

    # the same pipeline without an approver: the decision names no one, MEASURE 1.3 is missing
    second = _pipeline(st, tmp_path / "run2")
    assert second["model"]["version"] == "2" and second["approver"] is None
    decision = json.loads((Path(second["model_card"]).parent / "release_decision.json")
                          .read_text())
    assert decision["approver"] is None and decision["decided_by"] == "release-gates"
    items = {i.id: i for i in check_stack(st, version="2").items}
    assert items["MEASURE 1.3"].status == "missing"
    assert "approver" in items["MEASURE 1.3"].detail
    assert items["MAP 2.3"].status == items["MEASURE 2.1"].status == "satisfied"

    # a person reviews version 2 afterwards: `skyrig model approve` records it, MEASURE 1.3 holds
    from skyrig.cli import main
    from skyrig.governance.registry import Registry

    def skyrig(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["skyrig", *argv])
        with pytest.raises(SystemExit) as exc:
            main()
        return int(exc.value.code or 0)

    monkeypatch.setenv("SKYRIG_ROOT", str(st.root))
    argv = ("model", "approve", "--stack", "local", "--version", "2", "--reason", "card read")
    assert skyrig(*argv, "--approver", "release-gates") == 2
    assert skyrig(*argv, "--approver", "Dr. B. Reviewer") == 0
    items = {i.id: i for i in check_stack(st, version="2").items}
    assert items["MEASURE 1.3"].status == "satisfied", items["MEASURE 1.3"].detail
    reg = Registry(tracking_uri(st), second["model"]["name"])
    assert reg.get("2").tags["approver"] == "Dr. B. Reviewer"
    again = reg.approve("2", "Dr. B. Reviewer")
    assert again["changed"] is False  # idempotent
    # an approval interrupted after logging the file and before the tag: the rerun tags it
    reg.client.delete_model_version_tag(reg.name, "2", "approver")
    resumed = reg.approve("2", "Dr. B. Reviewer")
    assert resumed["changed"] is True and reg.get("2").tags["approver"] == "Dr. B. Reviewer"
    assert reg.approve("2", "Dr. B. Reviewer")["changed"] is False
    reg.client.set_model_version_tag(reg.name, "2", "release_decision", "no-go")
    from skyrig.governance.registry import RegistryError

    with pytest.raises(RegistryError, match="approves only a release the gates passed"):
        reg.approve("2", "Dr. C. Reviewer")


def test_an_automated_approver_name_is_refused(st: Stack, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from qso_anomaly.pipeline import main

    monkeypatch.setenv("QSO_RELEASE_APPROVER", "release-gates")
    rc = main(["--out", str(tmp_path / "o"), "--tracking-uri", tracking_uri(st), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "approver 'release-gates' is not a person" in err
    assert not (tmp_path / "o" / "release").exists()
