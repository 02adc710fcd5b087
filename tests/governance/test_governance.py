"""`skyrig governance check` and the prod gate against a real local MLflow registry: complete
evidence passes (exit 0), a missing item fails naming the subcategory and the file (exit 1),
evidence from another version or older than the version is stale, prod refuses to deploy."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skyrig.config import Stack
from skyrig.governance import GovernanceError, check_stack, load_catalogue, require_release_evidence
from skyrig.governance.report import render_markdown
from skyrig.runbooks.execute import DEFAULT_MODEL_NAME, tracking_uri
from support import edit_stack, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]


def evidence_files(version: str, *, decision: str = "go", approver: str = "Dr. R. Viewer",
                   when: dt.datetime | None = None, skip: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """The release files a complete release logs under release/ (what the catalogue asks)."""
    files: dict[str, Any] = {
        "release_decision.json": {
            "model": DEFAULT_MODEL_NAME, "version": version, "decision": decision,
            "approver": approver, "risk_tier": "ci",
            "timestamp": when.isoformat(timespec="seconds") if when else "__NOW__",
            "gates": {"passed": decision == "go", "results": [{"id": "overall_auroc"}]}},
        "model_card.json": {
            "model_details": {"version": version, "task": "anomaly detection",
                              "architecture": "conv AE + GMM", "framework": "torch"},
            "intended_use": "rank spectra", "users": ["astronomers"],
            "out_of_scope_uses": ["classification"], "limitations": ["synthetic data"],
            "metrics_plan": {"not_measured": [{"risk": "privacy"}]}},
        "model_card.md": "# Model card\n",
        "thresholds.yaml": "tiers: {}\n",
        "data_card.json": {"model_version": version, "provenance": "DESI EDR templates",
                           "known_biases": ["bright quasars over-represented"],
                           "lineage": {"data_version": "ab" * 32}},
        "evidence.json": {"model": {"version": version},
                          "detection": {"overall": {"auroc": 0.9},
                                        "baselines": {"pca": {"auroc": 0.7}}},
                          "lineage": {"data_version": "ab" * 32}, "drift": {"psi": 0.02}},
        "xai_report.json": {"localisation_auroc_localised_mean": 0.8,
                            "randomisation": {"passed": True}},
    }
    return {k: v for k, v in files.items() if k not in skip}


class Store:
    """The stack's registry (the workload's ModelRegistry) plus a writer of release files."""

    def __init__(self, st: Stack, tmp: Path) -> None:
        from qso_anomaly.registry.mlflow_registry import ModelRegistry

        (st.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri(st)
        self.reg = ModelRegistry(self.uri)
        self.tmp = tmp
        d = tmp / "model"
        d.mkdir(exist_ok=True)
        (d / "weights.bin").write_bytes(b"w" * 32)
        self.model_dir = d

    def release(self, files: dict[str, Any], *, tag_version: bool = True,
                champion: bool = True) -> str:
        rv = self.reg.register(model_dir=self.model_dir, model_name=DEFAULT_MODEL_NAME,
                               params={}, tags={"workload_version": "0.1.0"} if tag_version
                               else {})
        out = self.tmp / f"release-{rv.version}"
        out.mkdir()
        paths = []
        for name, body in files.items():
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            body = body if isinstance(body, str) else json.dumps(body).replace(
                '"@"', f'"{rv.version}"').replace("__NOW__", now)
            (out / name).write_text(body)
            paths.append(out / name)
        decision = files.get("release_decision.json", {}).get("decision", "no-go")
        self.reg.log_release(rv, paths, version_tags={"release_decision": decision})
        if champion:
            self.reg.client.set_registered_model_alias(DEFAULT_MODEL_NAME, "champion",
                                                       rv.version)
        return str(rv.version)


@pytest.fixture
def store(root: Path, tmp_path: Path) -> Store:
    return Store(stack(root, "local"), tmp_path)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYRIG_ROOT": str(root), "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "skyrig.cli", "governance", "check", *args],
                          capture_output=True, text=True, timeout=180, env=env)


def by_id(res: Any) -> dict[str, Any]:
    return {i.id: i for i in res.items}


def link_runbooks(root: Path) -> None:
    (root / "runbooks").symlink_to(REPO / "runbooks")


def test_catalogue_is_data_and_names_ai_rmf_core_ids() -> None:
    cat = load_catalogue()
    ids = [i.id for i in cat.items]
    assert len(ids) == len(set(ids)) >= 15
    assert {"MANAGE 1.1", "MEASURE 2.9", "MAP 2.3", "MANAGE 4.1", "MANAGE 2.4"} <= set(ids)
    assert all(i.split()[0] in ("GOVERN", "MAP", "MEASURE", "MANAGE") for i in ids)


def test_complete_evidence_passes_and_missing_evidence_names_subcategory_and_file(
        root: Path, store: Store) -> None:
    link_runbooks(root)
    v = store.release(evidence_files("@"))
    assert v == "1"
    r = cli(root, "--stack", "local", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["version"] == "1" and not doc["blocking"]
    assert {i["status"] for i in doc["items"]} == {"satisfied"}
    report = Path(doc["report"]).read_text()
    assert "**PASS**" in report and "| MAP 2.3 |" in report

    store.release(evidence_files("@", skip=("data_card.json",)))
    r = cli(root, "--stack", "local")
    assert r.returncode == 1
    assert "MAP 2.3" in r.stdout and "release/data_card.json" in r.stdout
    assert "required AI RMF evidence not satisfied: MAP 2.3" in r.stderr
    md = (root / ".skyrig" / "local" / "governance" / f"{DEFAULT_MODEL_NAME}-v2.md").read_text()
    assert "**FAIL**" in md and "**MAP 2.3** (missing): release/data_card.json is not logged" in md

    # the previous version, named explicitly, is still complete
    assert cli(root, "--stack", "local", "--version", "1").returncode == 0


def test_evidence_from_another_version_or_older_than_the_version_is_stale(
        root: Path, store: Store) -> None:
    link_runbooks(root)
    st = stack(root, "local")
    copied = evidence_files("@")
    copied["model_card.json"]["model_details"]["version"] = "999"  # card copied from elsewhere
    copied["release_decision.json"]["timestamp"] = (
        dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat()
    store.release(copied)
    res = check_stack(st)
    items = by_id(res)
    assert items["MAP 1.1"].status == "stale"
    assert "written for version 999, not 1" in items["MAP 1.1"].detail
    assert items["MANAGE 1.1"].status == "stale" and "older than the version" in \
        items["MANAGE 1.1"].detail
    assert items["MEASURE 2.9"].status == "satisfied"
    assert not res.ok and {"MAP 1.1", "MAP 2.1", "GOVERN 1.5", "MANAGE 1.1"} <= {
        i.id for i in res.blocking}
    assert "⚠️ stale" in render_markdown(res)


def test_prod_refuses_a_no_go_version_and_an_automated_approver(
        root: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyrig.workflows.up import run_up

    monkeypatch.setenv("SKYRIG_ROOT", str(root))
    link_runbooks(root)
    edit_stack(root, "local", "skyrig:environment: local", "skyrig:environment: prod")
    edit_stack(root, "local", "    user: skyrig", "    user: skyrig\n    ssh_keys: [ssh-ed25519"
               " AAAAC3NzaC1lZDI1NTE5AAAAIMk3r7cZ2QJmB5w1m6wJd0l5zS1f0yq8Jm3c9mQ0b8aX ops@lab]")
    st = stack(root, "local")
    store.release(evidence_files("@", decision="no-go"))
    from rich.console import Console

    with pytest.raises(GovernanceError) as exc:
        run_up("local", only="workload", console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    msg = str(exc.value)
    assert "refusing to deploy qso-ae-torch version 1" in msg and "prod" in msg
    assert "MANAGE 1.1: failed – release/release_decision.json: decision is 'no-go'" in msg

    for automated in ("release-gates", "Release Gates", "ci_bot"):
        store.release(evidence_files("@", approver=automated))
        with pytest.raises(GovernanceError,
                           match=r"MEASURE 1\.3: failed .*not a human reviewer"):
            require_release_evidence(st)
    store.release(evidence_files("@"))
    assert require_release_evidence(st).ok


def test_a_workload_release_lacks_only_what_a_person_or_the_baselines_must_add(
        root: Path, store: Store) -> None:
    """The workload's own release step (qso_anomaly.registry.release) writes the evidence,
    the data card included; what it cannot write by itself is the human approver (MEASURE 1.3)
    and the baselines it is not given (MEASURE 2.1). With both, nothing is missing."""
    from qso_anomaly.registry.gates import load_thresholds
    from qso_anomaly.registry.release import release_version

    link_runbooks(root)
    evaluation = {"n": 600, "k": 6, "per_class": {}, "per_snr_bin": {}, "per_z_bin": {},
                  "overall": {"n": 600, "n_positive": 60, "auroc": 0.9, "auroc_ci": [0.8, 0.9],
                              "average_precision": 0.5, "average_precision_ci": [0.4, 0.6],
                              "ap_lift": 5.0}}
    baselines = {"pca_chi2": {"overall": {"auroc": 0.7}}, "pca_iforest": {"overall": {
        "auroc": 0.6}}}

    def release(n: int, **kw: Any) -> Any:
        rv = store.reg.register(model_dir=store.model_dir, model_name=DEFAULT_MODEL_NAME,
                                params={}, tags={"workload_version": "0.1.0"})
        out = release_version(
            store.reg, rv, thresholds=load_thresholds(), release_dir=store.tmp / f"wl{n}",
            evaluation=evaluation, drift={"psi": 0.01},
            xai={"localisation_auroc_localised_mean": 0.9, "randomisation": {"passed": True}},
            model_details={"name": rv.name, "version": rv.version, "task": "anomaly detection",
                           "architecture": "ae", "framework": "torch"},
            data_lineage={"data_version": "ab" * 32, "generator": "qso-inject-v1"}, **kw)
        assert out.promoted
        return check_stack(stack(root, "local"))

    res = release(1)
    assert {i.id for i in res.blocking} == {"MEASURE 2.1", "MEASURE 1.3"}, [
        (i.id, i.detail) for i in res.blocking]
    assert by_id(res)["MAP 2.3"].status == "satisfied"
    assert by_id(res)["MANAGE 1.1"].status == "satisfied"
    assert by_id(res)["MEASURE 2.9"].status == "satisfied"

    res = release(2, approver="Dr. R. Viewer", baselines=baselines)
    assert res.ok, [(i.id, i.detail) for i in res.blocking]


def test_no_registry_is_a_clear_error_and_creates_nothing(root: Path) -> None:
    from skyrig.governance.registry import RegistryError

    st = stack(root, "local")
    with pytest.raises(RegistryError, match=r"no model registry at sqlite:///.*mlflow\.db"):
        check_stack(st)
    assert not (st.state_dir / "mlflow").exists()
