"""skyrig's alerting and recording rules, derived from one stack (pure data, no I/O).

Every alert carries ``labels.severity`` (critical|warning|info) and ``labels.stack``, and the
annotations ``summary``, ``description`` (naming the labels a runbook uses: node, vmid, instance,
gpu, job, model, version) and ``runbook_url`` = ``<skyrig:monitoring.runbook_base_url>/<id>.md``.
Alert names and runbook ids are the contract table of the project (:data:`RUNBOOK_IDS`).

Sources the expressions follow:

* DCGM: NVIDIA dcgm-exporter ``etc/default-counters.csv`` field names (``DCGM_FI_DEV_*``, labels
  ``gpu``, ``UUID``, ``Hostname``; skyrig relabels ``Hostname`` to ``node``);
  ``DCGM_FI_DEV_XID_ERRORS`` is a gauge holding the last XID code.
* Device plugin: kube-state-metrics ``kube_node_status_allocatable{resource="nvidia_com_gpu"}``.
* Ray: the head's ``up`` series (job ``ray-head``/``ray-worker`` set by skyrig's scrape configs
  and PodMonitors); KubeRay operator metrics ``kuberay_job_deployment_status`` and
  ``kuberay_job_execution_duration_seconds`` (KubeRay ``config/grafana/KubeRay-Operator.json``).
* Workload: the ``anomaly_*`` metrics of ``qso_anomaly.metrics.exporter``.
* Proxmox: prometheus-pve-exporter ``pve_up{id="node/<n>"|"qemu/<vmid>"}`` and
  ``pve_guest_info{id,node,name,...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from skyrig.config import Stack

Severity = Literal["critical", "warning", "info"]

#: Alert name -> runbook id (the contract between alerts and runbooks; do not change alone).
RUNBOOK_IDS: dict[str, str] = {
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

#: XID codes NVIDIA treats as hardware faults needing a drain/reset/RMA (48 DBE, 63/64 row
#: remap, 74 NVLink, 79 fallen off the bus, 92 high SBE rate, 94/95 contained/uncontained ECC,
#: 119/120 GSP errors); any other non-zero XID is a warning.
CRITICAL_XIDS: tuple[int, ...] = (48, 63, 64, 74, 79, 92, 94, 95, 119, 120)

#: Scrape job names shared by the local scrape config, the Kubernetes monitors and the rules.
JOB_RAY_HEAD = "ray-head"
JOB_RAY_WORKER = "ray-worker"
JOB_DCGM = "dcgm-exporter"
JOB_PVE = "pve"
JOB_PUSHGATEWAY = "pushgateway"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; ``group`` names its rule group (gpu, ray, workload, proxmox, scrape)."""

    name: str
    group: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str

    @property
    def runbook_id(self) -> str:
        """The runbook this alert points at (:data:`RUNBOOK_IDS`)."""
        return RUNBOOK_IDS[self.name]


def _or(parts: list[str]) -> str:
    return " or ".join(f"({p})" for p in parts)


def alert_rules(stack: Stack) -> list[AlertRule]:
    """All alerting rules of ``stack``, in a stable order, one or more per :data:`RUNBOOK_IDS` key.

    Thresholds come from ``skyrig:monitoring`` (``gpu_temp_alert_c`` in °C,
    ``anomaly_drift_psi_alert`` (PSI, dimensionless), ``anomaly_rejected_ratio_alert`` (0-1),
    ``rayjob_deadline_s`` in seconds); expected counts (GPU nodes, Ray workers, VM ids) from the
    stack's VMs.
    """
    cfg = stack.config
    mon = cfg.monitoring
    gpu_vms = [vm for vm in cfg.vms if vm.gpus]
    vmids = "|".join(str(vm.vmid) for vm in cfg.vms) or "none"
    n_workers = {
        "local": 0,
        "kuberay": cfg.ray.gpu_workers_min,
        "vm": sum(1 for vm in cfg.vms if "ray_worker" in vm.roles),
    }[cfg.ray.mode]
    alloc = 'kube_node_status_allocatable{resource="nvidia_com_gpu",node="%s"}'
    missing = _or(
        [
            f"sum by (node) ({alloc % vm.name}) < {len(vm.gpus)}"
            for vm in gpu_vms
        ]
        + [f"max by (node) (absent({alloc % vm.name}))" for vm in gpu_vms]
    ) or "vector(0) > 1"
    # only where kube-state-metrics reports nodes (stacks without Kubernetes stay quiet)
    missing = f"({missing}) and on () (count(kube_node_info) > 0)"
    xids = "|".join(str(x) for x in CRITICAL_XIDS)
    workers = (
        f'count(up{{job="{JOB_RAY_WORKER}"}} == 1) < {n_workers}'
        f' or absent(up{{job="{JOB_RAY_WORKER}"}} == 1)'
        if n_workers
        else f'count(up{{job="{JOB_RAY_WORKER}"}} == 0) > 0'
    )
    return [
        # ------------------------------------------------------------------------------ gpu
        AlertRule(
            "GpuTemperatureHigh", "gpu",
            f"max by (node, gpu, UUID) (DCGM_FI_DEV_GPU_TEMP) > {mon.gpu_temp_alert_c}",
            "5m", "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.node }} is at {{ $value }} °C",
            "GPU {{ $labels.gpu }} (UUID {{ $labels.UUID }}) on node {{ $labels.node }}"
            f" has been above {mon.gpu_temp_alert_c} °C for 5 minutes; check fans, airflow and"
            " the clocks it throttles to.",
        ),
        AlertRule(
            "GpuClocksThrottled", "gpu",
            "max by (node, gpu, UUID) (rate(DCGM_FI_DEV_THERMAL_VIOLATION[5m])) > 0"
            " or max by (node, gpu, UUID) (rate(DCGM_FI_DEV_POWER_VIOLATION[5m])) > 0",
            "10m", "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.node }} throttles its clocks",
            "GPU {{ $labels.gpu }} on node {{ $labels.node }} has spent time in thermal or power"
            " throttling for 10 minutes (DCGM_FI_DEV_THERMAL_VIOLATION / POWER_VIOLATION rising).",
        ),
        AlertRule(
            "GpuXidErrors", "gpu",
            "DCGM_FI_DEV_XID_ERRORS > 0",
            "0m", "critical",
            "GPU {{ $labels.gpu }} on {{ $labels.node }} reported XID {{ $value }}",
            "GPU {{ $labels.gpu }} (UUID {{ $labels.UUID }}) on node {{ $labels.node }} reported"
            f" XID {{{{ $value }}}}. Codes {xids.replace('|', ', ')} are hardware faults: drain"
            " the node, reset the GPU, replace it if the XID returns.",
        ),
        AlertRule(
            "GpuEccUncorrectable", "gpu",
            "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0",
            "0m", "critical",
            "GPU {{ $labels.gpu }} on {{ $labels.node }} had uncorrectable ECC errors",
            "GPU {{ $labels.gpu }} (UUID {{ $labels.UUID }}) on node {{ $labels.node }} counted"
            " {{ $value }} double-bit (uncorrectable) volatile ECC errors in 10 minutes.",
        ),
        AlertRule(
            "GpuRowRemapFailure", "gpu",
            "DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
            "0m", "critical",
            "GPU {{ $labels.gpu }} on {{ $labels.node }} failed to remap a memory row",
            "GPU {{ $labels.gpu }} (UUID {{ $labels.UUID }}) on node {{ $labels.node }} reports a"
            " row-remap failure: its memory can no longer be repaired; plan a replacement (RMA).",
        ),
        AlertRule(
            "GpuNodeMissingFromDevicePlugin", "gpu",
            missing,
            "10m", "critical",
            "Node {{ $labels.node }} advertises fewer GPUs than the stack gives it",
            "Kubernetes node {{ $labels.node }} has allocatable nvidia.com/gpu below what stack"
            f" {stack.name} passes through to it (or none at all) for 10 minutes: the device"
            " plugin, driver or passthrough lost the GPU.",
        ),
        # ------------------------------------------------------------------------------ ray
        AlertRule(
            "RayHeadDown", "ray",
            f'up{{job="{JOB_RAY_HEAD}"}} == 0 or absent(up{{job="{JOB_RAY_HEAD}"}})',
            "2m", "critical",
            f"The Ray head of stack {stack.name} is down",
            "The Ray head's metrics endpoint {{ $labels.instance }} (job {{ $labels.job }}) has"
            " not answered for 2 minutes: the head, its GCS or the node it runs on is gone.",
        ),
        AlertRule(
            "RayWorkerNodesLost", "ray",
            workers,
            "5m", "warning",
            f"Ray worker nodes of stack {stack.name} are missing",
            f"Fewer Ray worker nodes answer than the {n_workers} the stack keeps (value:"
            " {{ $value }}) for 5 minutes; jobs run with less capacity or wait.",
        ),
        AlertRule(
            "RayJobFailed", "ray",
            'max by (namespace, name) (kuberay_job_deployment_status{deployment_status="Failed"})'
            " > 0",
            "0m", "warning",
            "RayJob {{ $labels.namespace }}/{{ $labels.name }} failed",
            "RayJob {{ $labels.name }} in namespace {{ $labels.namespace }} is in deployment"
            " status Failed (KubeRay operator).",
        ),
        AlertRule(
            "RayJobPastDeadline", "ray",
            "max by (namespace, name) (kuberay_job_execution_duration_seconds)"
            f" > {cfg.monitoring.rayjob_deadline_s}",
            "0m", "warning",
            "RayJob {{ $labels.namespace }}/{{ $labels.name }} runs past its deadline",
            "RayJob {{ $labels.name }} in namespace {{ $labels.namespace }} has run"
            " {{ $value | humanizeDuration }}, longer than the stack's"
            f" {cfg.monitoring.rayjob_deadline_s} s.",
        ),
        # ------------------------------------------------------------------------- workload
        AlertRule(
            "AnomalyScoreDrift", "workload",
            f"max by (job, window) (anomaly_score_psi) > {mon.anomaly_drift_psi_alert}",
            "0m", "warning",
            "Anomaly scores drifted from the reference (PSI {{ $value }})",
            "The population stability index of the last run's scores against the champion's"
            f" reference is {{{{ $value }}}} (window {{{{ $labels.window }}}}), above"
            f" {mon.anomaly_drift_psi_alert}: the survey or the model changed.",
        ),
        AlertRule(
            "AnomalyRejectedSpectraHigh", "workload",
            "sum by (job) (anomaly_input_rejected_total)"
            " / sum by (job) (anomaly_inference_requests_total)"
            f" > {mon.anomaly_rejected_ratio_alert}",
            "0m", "warning",
            "{{ $value | humanizePercentage }} of submitted spectra were rejected",
            "Input validation rejected {{ $value | humanizePercentage }} of the spectra submitted"
            f" to job {{{{ $labels.job }}}}, above {mon.anomaly_rejected_ratio_alert:.0%}.",
        ),
        AlertRule(
            "AnomalyModelReleaseMismatch", "workload",
            f'count by (model) (anomaly_model_info{{framework!="{cfg.workload.framework}"}})'
            " or count by (model) (count by (model, version) (anomaly_model_info)) > 1",
            "0m", "critical",
            "Model {{ $labels.model }} is not the release the stack pins",
            f"Model {{{{ $labels.model }}}} reports a framework other than"
            f" `{cfg.workload.framework}` (workload {cfg.workload.version}, alias"
            f" {cfg.workload.model_alias}) or several versions at once; roll back to the pinned"
            " release.",
        ),
        # -------------------------------------------------------------------------- proxmox
        AlertRule(
            "ProxmoxNodeDown", "proxmox",
            'label_replace(pve_up{id=~"node/.+"}, "node", "$1", "id", "node/(.+)") == 0',
            "2m", "critical",
            "Proxmox node {{ $labels.node }} is down",
            "Proxmox VE reports node {{ $labels.node }} offline for 2 minutes (pve exporter"
            " {{ $labels.instance }}); its VMs and GPUs are unavailable.",
        ),
        AlertRule(
            "SkyrigVmStopped", "proxmox",
            f'label_replace(pve_up{{id=~"qemu/({vmids})"}}, "vmid", "$1", "id", "qemu/(.+)")'
            " == 0",
            "1m", "warning",
            f"VM {{{{ $labels.vmid }}}} of stack {stack.name} is stopped",
            "Proxmox VE reports VM {{ $labels.vmid }} ({{ $labels.id }}) of stack"
            f" {stack.name} not running for 1 minute; skyrig expects it up.",
        ),
        # --------------------------------------------------------------------------- scrape
        AlertRule(
            "ScrapeTargetDown", "scrape",
            f'up{{job!="{JOB_RAY_HEAD}"}} == 0',
            "5m", "warning",
            "Scrape target {{ $labels.instance }} (job {{ $labels.job }}) is down",
            "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} for"
            " 5 minutes; the exporter or its host is down.",
        ),
    ]


def recording_rules() -> list[dict[str, str]]:
    """Recording rules (``level:metric:operations`` names, Prometheus naming practice)."""
    return [
        {"record": "skyrig:gpu_memory_used:ratio",
         "expr": "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"},
        {"record": "skyrig:gpu_utilization:avg_by_node",
         "expr": "avg by (node) (DCGM_FI_DEV_GPU_UTIL) / 100"},
        {"record": "skyrig:anomaly_flagged:ratio",
         "expr": "sum by (job) (anomaly_flagged_total)"
                 " / sum by (job) (anomaly_inference_requests_total)"},
        {"record": "skyrig:up:ratio_by_job", "expr": "avg by (job) (up)"},
    ]


def runbook_url(stack: Stack, runbook_id: str) -> str:
    """``<runbook_base_url>/<runbook_id>.md`` (trailing slashes of the base dropped)."""
    return f"{stack.config.monitoring.runbook_base_url.rstrip('/')}/{runbook_id}.md"


def rule_groups(stack: Stack) -> list[dict[str, Any]]:
    """Prometheus rule groups (the ``groups:`` list of a rule file / PrometheusRule spec)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in alert_rules(stack):
        groups.setdefault(a.group, []).append(
            {
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": {"severity": a.severity, "stack": stack.name},
                "annotations": {
                    "summary": a.summary,
                    "description": a.description,
                    "runbook_url": runbook_url(stack, a.runbook_id),
                },
            }
        )
    out: list[dict[str, Any]] = [
        {"name": "skyrig.recording", "rules": recording_rules()},
    ]
    out += [{"name": f"skyrig.{name}", "rules": rules} for name, rules in groups.items()]
    return out
