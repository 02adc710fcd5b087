"""skyrig's Grafana dashboards, built with grafana-foundation-sdk (dashboards as code).

Three dashboards, each a plain dict in Grafana's dashboard JSON model:

* ``skyrig-gpu`` — DCGM temperature, utilisation, memory ratio, power, XID, throttling;
* ``skyrig-ray`` — Ray node CPU/memory/GPU use and task counts (Ray's system metric names,
  ``config/grafana/default_grafana_dashboard.json`` of KubeRay);
* ``skyrig-workload`` — anomaly scoring throughput, score PSI, flagged and rejected ratios,
  model release;
plus ``skyrig-overview``: targets up and alerts firing per stack.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from skyrig.config import Stack

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _q(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def _ts(title: str, unit: str, *queries: tuple[str, str], desc: str = "") -> timeseries.Panel:
    p = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
    if desc:
        p = p.description(desc)
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(_q(expr, legend, chr(ord("A") + i)))
    return p


def _stat(title: str, expr: str, unit: str = "none") -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(6)
            .with_target(_q(expr)))


def _base(uid: str, title: str, stack: Stack) -> gd.Dashboard:
    ds = (gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    return (
        gd.Dashboard(title)
        .uid(uid)
        .tags(["skyrig", f"stack:{stack.name}"])
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(ds)
    )


def _gpu(stack: Stack) -> gd.Dashboard:
    t = stack.config.monitoring.gpu_temp_alert_c
    return (
        _base("skyrig-gpu", f"skyrig GPUs ({stack.name})", stack)
        .with_row(gd.Row("Health"))
        .with_panel(_ts("GPU temperature", "celsius",
                        ("DCGM_FI_DEV_GPU_TEMP", "{{node}} gpu{{gpu}}"),
                        desc=f"Alert GpuTemperatureHigh above {t} °C for 5 minutes."))
        .with_panel(_ts("XID (last code)", "none",
                        ("DCGM_FI_DEV_XID_ERRORS", "{{node}} gpu{{gpu}}")))
        .with_panel(_ts("Throttling (thermal, power)", "percentunit",
                        ("rate(DCGM_FI_DEV_THERMAL_VIOLATION[5m]) / 1e9", "thermal {{node}}"),
                        ("rate(DCGM_FI_DEV_POWER_VIOLATION[5m]) / 1e9", "power {{node}}")))
        .with_panel(_ts("ECC double-bit / row remap failures", "none",
                        ("increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m])", "DBE {{node}}"),
                        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "remap failed {{node}}")))
        .with_row(gd.Row("Use"))
        .with_panel(_ts("GPU utilisation", "percent",
                        ("DCGM_FI_DEV_GPU_UTIL", "{{node}} gpu{{gpu}}")))
        .with_panel(_ts("GPU memory used", "percentunit",
                        ("skyrig:gpu_memory_used:ratio", "{{node}} gpu{{gpu}}")))
        .with_panel(_ts("Power", "watt", ("DCGM_FI_DEV_POWER_USAGE", "{{node}} gpu{{gpu}}")))
        .with_panel(_ts("Tensor pipe active", "percentunit",
                        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "{{node}} gpu{{gpu}}")))
    )


def _ray(stack: Stack) -> gd.Dashboard:
    return (
        _base("skyrig-ray", f"skyrig Ray ({stack.name})", stack)
        .with_panel(_stat("Ray nodes up", 'sum(up{job=~"ray-head|ray-worker"})'))
        .with_panel(_stat("Running tasks", 'sum(ray_tasks{State="RUNNING"})'))
        .with_panel(_ts("Node CPU", "percent",
                        ("ray_node_cpu_utilization", "{{instance}}")))
        .with_panel(_ts("Node memory used", "bytes", ("ray_node_mem_used", "{{instance}}")))
        .with_panel(_ts("GPU use (Ray)", "percent",
                        ("ray_node_gpus_utilization", "{{instance}} gpu{{GpuIndex}}")))
        .with_panel(_ts("Tasks by state", "none",
                        ("sum by (State) (ray_tasks)", "{{State}}")))
        .with_panel(_ts("Worker OOM kills / unexpected failures", "none",
                        ("increase(ray_memory_manager_worker_eviction_total[10m])", "OOM"),
                        ("increase(ray_node_manager_unexpected_worker_failure_total[10m])",
                         "failures")))
    )


def _workload(stack: Stack) -> gd.Dashboard:
    psi = stack.config.monitoring.anomaly_drift_psi_alert
    return (
        _base("skyrig-workload", f"skyrig workload ({stack.name})", stack)
        .with_panel(_stat("Model release", "anomaly_model_info"))
        .with_panel(_stat("Score PSI", "max(anomaly_score_psi)"))
        .with_panel(_ts("Scoring throughput", "none",
                        ("anomaly_throughput_spectra_per_second", "{{model}} v{{version}}")))
        .with_panel(_ts("Score drift (PSI)", "none",
                        ("anomaly_score_psi", "{{window}}"),
                        desc=f"Alert AnomalyScoreDrift above {psi}."))
        .with_panel(_ts("Flagged ratio", "percentunit",
                        ("skyrig:anomaly_flagged:ratio", "{{job}}")))
        .with_panel(_ts("Rejected spectra", "none",
                        ("sum by (reason) (anomaly_input_rejected_total)", "{{reason}}")))
    )


def _overview(stack: Stack) -> gd.Dashboard:
    return (
        _base("skyrig-overview", f"skyrig overview ({stack.name})", stack)
        .with_panel(_stat("Targets up", "sum(up)"))
        .with_panel(_stat("Targets", "count(up)"))
        .with_panel(_stat("Alerts firing", 'count(ALERTS{alertstate="firing"}) or vector(0)'))
        .with_panel(_ts("Targets up by job", "percentunit",
                        ("skyrig:up:ratio_by_job", "{{job}}")))
        .with_panel(_ts("Alerts firing", "none",
                        ('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}")))
    )


def _plain(d: gd.Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return out


def dashboards(stack: Stack) -> dict[str, dict[str, Any]]:
    """uid -> Grafana dashboard JSON model (plain dict) for ``stack``."""
    return {
        d["uid"]: d
        for d in (_plain(b) for b in (_overview(stack), _gpu(stack), _ray(stack),
                                      _workload(stack)))
    }
