"""Monitoring rules, rendered files and promtool: every alert of the contract, promtool check
rules/config on every rendered file, a firing and a quiet promtool unit test per alert."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from alert_cases import CASES, promtool_tests

from skyrig.config import load_stack
from skyrig.monitoring import RULES_FILE, RUNBOOK_IDS, alert_rules, local_ports, rule_groups
from skyrig.workflows.render import render_stack
from support import REPO, edit_stack, make_root, stack

pytestmark = pytest.mark.unit

#: The alert names and runbook ids of the project's contract table (docs/monitoring.md).
CONTRACT = {
    "GpuTemperatureHigh": "gpu-health",
    "GpuClocksThrottled": "gpu-health",
    "GpuXidErrors": "gpu-replace",
    "GpuEccUncorrectable": "gpu-replace",
    "GpuRowRemapFailure": "gpu-replace",
    "GpuNodeMissingFromDevicePlugin": "gpu-node-missing",
    "RayHeadDown": "ray-cluster-recovery",
    "RayWorkerNodesLost": "ray-cluster-recovery",
    "RayJobFailed": "rayjob-failed",
    "RayJobPastDeadline": "rayjob-failed",
    "AnomalyScoreDrift": "score-drift",
    "AnomalyRejectedSpectraHigh": "score-drift",
    "AnomalyModelReleaseMismatch": "model-rollback",
    "ProxmoxNodeDown": "pve-node-down",
    "SkyrigVmStopped": "vm-stopped",
    "ScrapeTargetDown": "scrape-target-down",
}
STACKS = ("local", "dev", "prod")


def _promtool() -> str | None:
    """promtool, installed on first use like the local stack does (root only)."""
    if shutil.which("promtool") is None and os.geteuid() == 0:
        from rich.console import Console

        from skyrig.workflows.localmon import ensure_installed

        ensure_installed(Console(quiet=True))
    return shutil.which("promtool")


PROMTOOL = _promtool()
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (as root)")


def _alerts(name: str) -> list[dict[str, object]]:
    return [r for g in rule_groups(load_stack(name)) for r in g["rules"] if "alert" in r]


def test_alert_names_and_runbook_ids_are_the_contract() -> None:
    assert RUNBOOK_IDS == CONTRACT
    for name in STACKS:
        assert {a.name for a in alert_rules(load_stack(name))} == set(CONTRACT), name


@pytest.mark.parametrize("name", STACKS)
def test_every_alert_has_severity_summary_description_runbook(name: str) -> None:
    for rule in _alerts(name):
        labels, ann = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(ann, dict)
        assert labels["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert labels["stack"] == name
        assert ann["summary"] and ann["description"], rule["alert"]
        assert ann["runbook_url"] == f"runbooks/{CONTRACT[str(rule['alert'])]}.md"


def test_thresholds_come_from_the_stack(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "local", "    dcgm_exporter: false\n",
               "    dcgm_exporter: false\n    gpu_temp_alert_c: 77\n"
               "    anomaly_drift_psi_alert: 0.33\n    runbook_base_url: https://ops.example/rb/\n")
    rules = {a.name: a for a in alert_rules(stack(root, "local"))}
    assert rules["GpuTemperatureHigh"].expr.endswith("> 77")
    assert rules["AnomalyScoreDrift"].expr.endswith("> 0.33")
    url = next(r for g in rule_groups(stack(root, "local")) for r in g["rules"]
           if r.get("alert") == "SkyrigVmStopped")["annotations"]["runbook_url"]
    assert url == "https://ops.example/rb/vm-stopped.md"
    # the VM-stopped alert watches exactly the stack's VM ids
    assert 'qemu/(301|302)' in rules["SkyrigVmStopped"].expr


def test_local_ports_differ_between_stacks_and_follow_the_override(tmp_path: Path) -> None:
    ports = {n: local_ports(load_stack(n)) for n in STACKS}
    assert len({p.prometheus for p in ports.values()}) == len(STACKS)
    for p in ports.values():
        assert len(set(p.all().values())) == len(p.all())
    root = make_root(tmp_path)
    edit_stack(root, "local", "    dcgm_exporter: false\n",
               "    dcgm_exporter: false\n    local_port_base: 40000\n")
    assert local_ports(stack(root, "local")).alertmanager == 40001


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert [c.alert for c in CASES] == list(CONTRACT)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("render")
    for name in STACKS:
        render_stack(load_stack(name), out)
    return {name: out / name / "monitoring" for name in STACKS}


@pytest.mark.parametrize("name", STACKS)
def test_render_writes_rules_configs_and_dashboards(rendered: dict[str, Path], name: str) -> None:
    mon = rendered[name]
    assert (mon / RULES_FILE).is_file()
    conf = yaml.safe_load((mon / "prometheus.yml").read_text())
    assert conf["rule_files"] == [RULES_FILE]
    assert conf["global"]["external_labels"]["stack"] == name
    assert sorted(p.name for p in (mon / "dashboards").iterdir()) == [
        "skyrig-gpu.json", "skyrig-overview.json", "skyrig-ray.json", "skyrig-workload.json"]


@needs_promtool
@pytest.mark.parametrize("name", STACKS)
def test_promtool_check_rules_and_config(rendered: dict[str, Path], name: str) -> None:
    mon = rendered[name]
    for args in (["check", "rules", str(mon / RULES_FILE)],
                 ["check", "config", str(mon / "prometheus.yml")]):
        r = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    if AMTOOL:
        r = subprocess.run([AMTOOL, "check-config", str(mon / "alertmanager.yml")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_quiet(rendered: dict[str, Path]) -> None:
    mon = rendered["prod"]
    tests = mon / "skyrig.rules.test.yml"
    tests.write_text(yaml.safe_dump(promtool_tests(load_stack("prod"), RULES_FILE),
                                    sort_keys=False, width=200))
    r = subprocess.run([str(PROMTOOL), "test", "rules", tests.name], cwd=mon,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(rendered: dict[str, Path]) -> None:
    """The generated tests catch a wrong threshold: swap the quiet and firing series of one."""
    mon = rendered["prod"]
    doc = promtool_tests(load_stack("prod"), RULES_FILE)
    fire = next(t for t in doc["tests"] if t["name"] == "GpuTemperatureHigh fire")
    fire["input_series"][0]["values"] = "70x20"
    tests = mon / "broken.test.yml"
    tests.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))
    r = subprocess.run([str(PROMTOOL), "test", "rules", tests.name], cwd=mon,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "GpuTemperatureHigh" in r.stdout + r.stderr


_RUNBOOKS = REPO / "runbooks"


@pytest.mark.parametrize("name", STACKS)
def test_every_runbook_url_resolves_to_a_runbook_that_answers_the_alert(name: str) -> None:
    from skyrig.runbooks.parse import parse_runbook

    missing = []
    for rule in _alerts(name):
        url = str(rule["annotations"]["runbook_url"])  # type: ignore[index]
        rid = url.rsplit("/", 1)[-1]
        path = _RUNBOOKS / rid
        if not path.is_file():
            missing.append(f"{rule['alert']} -> runbooks/{rid} (no such file)")
        elif rule["alert"] not in parse_runbook(path).alerts:
            missing.append(f"{rule['alert']} -> runbooks/{rid} (not in its `alerts:`)")
    assert not missing, missing


def test_docs_monitoring_is_current() -> None:
    from skyrig.monitoring.reference import render_doc

    doc = (REPO / "docs" / "monitoring.md").read_text()
    assert doc == render_doc(load_stack("prod"), load_stack("local")), (
        "docs/monitoring.md is stale: run `python -m skyrig.monitoring.reference >"
        " docs/monitoring.md`")
