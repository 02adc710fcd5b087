"""One firing and one quiet ``promtool test rules`` case per skyrig alert (prod stack rules).

Each case gives input series (promtool expanding notation, 1m interval), the evaluation time,
the labels the firing alert must carry (besides ``severity``/``stack``, which come from the
rule) and the text its ``$value`` templates expand to. :func:`promtool_tests` turns them into a
promtool test file whose expected annotations are the rule's templates expanded by hand, so
promtool checks labels, timing (``for``) and annotation text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from skyrig.config import Stack
from skyrig.monitoring import alert_rules
from skyrig.monitoring.alerts import runbook_url

GPU = 'gpu="0",UUID="GPU-aaaa",node="gpu-w-01"'
GPU_LABELS = {"gpu": "0", "UUID": "GPU-aaaa", "node": "gpu-w-01"}


@dataclass(frozen=True)
class Case:
    """A firing case (``fire``) and a quiet case (``quiet``) for alert ``alert``."""

    alert: str
    fire: list[tuple[str, str]]
    quiet: list[tuple[str, str]]
    eval_time: str
    labels: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)


def _alloc(node: str, v: str) -> tuple[str, str]:
    return (f'kube_node_status_allocatable{{resource="nvidia_com_gpu",node="{node}"}}', v)


PROD_GPU_NODES = tuple(f"gpu-w-0{i}" for i in range(1, 9))  # stacks/Pulumi.prod.yaml

CASES: list[Case] = [
    Case("GpuTemperatureHigh",
         fire=[(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "90x20")],
         quiet=[(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "70x20")],
         eval_time="10m", labels=GPU_LABELS, values={"$value": "90"}),
    Case("GpuClocksThrottled",
         fire=[(f"DCGM_FI_DEV_THERMAL_VIOLATION{{{GPU}}}", "0+60000000000x30")],
         quiet=[(f"DCGM_FI_DEV_THERMAL_VIOLATION{{{GPU}}}", "5x30")],
         eval_time="20m", labels=GPU_LABELS),
    Case("GpuXidErrors",
         fire=[(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0 0 79 79 79")],
         quiet=[(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0x4")],
         eval_time="3m", labels=GPU_LABELS, values={"$value": "79"}),
    Case("GpuEccUncorrectable",
         fire=[(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0 0 0 0 0 3 3 3")],
         quiet=[(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "2x7")],
         eval_time="6m", labels=GPU_LABELS, values={"$value": "3"}),
    Case("GpuRowRemapFailure",
         fire=[(f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}", "0 1 1")],
         quiet=[(f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}", "0 0 0")],
         eval_time="2m", labels=GPU_LABELS),
    Case("GpuNodeMissingFromDevicePlugin",
         fire=[_alloc(n, "1x20") for n in PROD_GPU_NODES if n != "gpu-w-03"]
         + [_alloc("gpu-w-03", "1 1 0x18"), ('kube_node_info{node="gpu-w-01"}', "1x20")],
         quiet=[_alloc(n, "1x20") for n in PROD_GPU_NODES]
         + [('kube_node_info{node="gpu-w-01"}', "1x20")],
         eval_time="15m", labels={"node": "gpu-w-03"}),
    Case("RayHeadDown",
         fire=[('up{job="ray-head",instance="10.0.0.5:8080"}', "1 0x10")],
         quiet=[('up{job="ray-head",instance="10.0.0.5:8080"}', "1x10")],
         eval_time="5m", labels={"job": "ray-head", "instance": "10.0.0.5:8080"}),
    Case("RayWorkerNodesLost",
         fire=[('up{job="ray-worker",instance="10.0.0.6:8080"}', "1 0x10")],
         quiet=[('up{job="ray-worker",instance="10.0.0.6:8080"}', "1x10")],
         eval_time="8m", labels={}, values={"$value": "1"}),
    Case("RayJobFailed",
         fire=[('kuberay_job_deployment_status{namespace="ray",name="score-0-1-0",'
                'deployment_status="Failed"}', "0 1 1")],
         quiet=[('kuberay_job_deployment_status{namespace="ray",name="score-0-1-0",'
                 'deployment_status="Running"}', "1 1 1")],
         eval_time="2m", labels={"namespace": "ray", "name": "score-0-1-0"}),
    Case("RayJobPastDeadline",
         fire=[('kuberay_job_execution_duration_seconds{namespace="ray",name="score-0-1-0"}',
                "7200x3")],
         quiet=[('kuberay_job_execution_duration_seconds{namespace="ray",name="score-0-1-0"}',
                 "600x3")],
         eval_time="2m", labels={"namespace": "ray", "name": "score-0-1-0"},
         values={"$value | humanizeDuration": "2h 0m 0s"}),
    Case("AnomalyScoreDrift",
         fire=[('anomaly_score_psi{job="qso_anomaly",window="run"}', "0.35x3")],
         quiet=[('anomaly_score_psi{job="qso_anomaly",window="run"}', "0.05x3")],
         eval_time="2m", labels={"job": "qso_anomaly", "window": "run"},
         values={"$value": "0.35"}),
    Case("AnomalyRejectedSpectraHigh",
         fire=[('anomaly_input_rejected_total{job="qso_anomaly",reason="nan"}', "100x3"),
               ('anomaly_inference_requests_total{job="qso_anomaly",outcome="ok"}', "1000x3")],
         quiet=[('anomaly_input_rejected_total{job="qso_anomaly",reason="nan"}', "1x3"),
                ('anomaly_inference_requests_total{job="qso_anomaly",outcome="ok"}', "1000x3")],
         eval_time="2m", labels={"job": "qso_anomaly"},
         values={"$value | humanizePercentage": "10%"}),
    Case("AnomalyModelReleaseMismatch",
         fire=[('anomaly_model_info{model="qso-ae",version="3",framework="torch"}', "1x3"),
               ('anomaly_model_info{model="qso-ae",version="2",framework="torch"}', "1x3")],
         quiet=[('anomaly_model_info{model="qso-ae",version="3",framework="torch"}', "1x3")],
         eval_time="2m", labels={"model": "qso-ae"}),
    Case("ProxmoxNodeDown",
         fire=[('pve_up{id="node/pve04",instance="pve"}', "1 0x5")],
         quiet=[('pve_up{id="node/pve04",instance="pve"}', "1x5")],
         eval_time="4m", labels={"id": "node/pve04", "node": "pve04", "instance": "pve"}),
    Case("SkyrigVmStopped",
         fire=[('pve_up{id="qemu/301",instance="pve"}', "1 0x5"),
               ('pve_up{id="qemu/999",instance="pve"}', "0x5")],
         quiet=[('pve_up{id="qemu/301",instance="pve"}', "1x5"),
                ('pve_up{id="qemu/999",instance="pve"}', "0x5")],
         eval_time="4m", labels={"id": "qemu/301", "vmid": "301", "instance": "pve"}),
    Case("ScrapeTargetDown",
         fire=[('up{job="node",instance="10.0.0.7:9100"}', "1 0x10")],
         quiet=[('up{job="node",instance="10.0.0.7:9100"}', "1x10"),
                ('up{job="ray-head",instance="10.0.0.5:8080"}', "1x10")],
         eval_time="8m", labels={"job": "node", "instance": "10.0.0.7:9100"}),
]

_TMPL = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def expand(template: str, labels: dict[str, str], values: dict[str, str]) -> str:
    """Expand the templates skyrig's annotations use: ``$labels.X`` (missing: empty),
    ``$value`` and the filtered forms given in ``values``."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.startswith("$labels."):
            return labels.get(key.removeprefix("$labels."), "")
        if key in values:
            return values[key]
        raise KeyError(f"no expansion given for {{{{ {key} }}}}")

    return _TMPL.sub(sub, template)


def promtool_tests(stack: Stack, rule_file: str) -> dict[str, Any]:
    """A promtool unit-test document with a firing and a quiet test per case."""
    rules = {r.name: r for r in alert_rules(stack)}
    tests: list[dict[str, Any]] = []
    for c in CASES:
        rule = rules[c.alert]
        labels = {**c.labels, "severity": rule.severity, "stack": stack.name}
        tmpl_labels = dict(c.labels)
        exp = {
            "exp_labels": labels,
            "exp_annotations": {
                "summary": expand(rule.summary, tmpl_labels, c.values),
                "description": expand(rule.description, tmpl_labels, c.values),
                "runbook_url": runbook_url(stack, rule.runbook_id),
            },
        }
        for kind, series, expected in (("fire", c.fire, [exp]), ("quiet", c.quiet, [])):
            tests.append({
                "name": f"{c.alert} {kind}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {"eval_time": c.eval_time, "alertname": c.alert, "exp_alerts": expected}],
            })
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}
