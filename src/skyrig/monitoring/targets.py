"""Scrape targets per environment and the local monitoring stack's ports (pure).

* ``local`` (``ray.mode: local``, embedded pvesim): everything on 127.0.0.1 — Prometheus itself,
  Alertmanager, Pushgateway (the workload's ``anomaly_*`` metrics), the host's node exporter,
  prometheus-pve-exporter against pvesim, and the local Ray head's metrics port.
* ``vm`` / ``kuberay`` on real clusters: static targets for the guests' node and DCGM exporters
  (the ``node_monitoring`` role) and the PVE exporter; inside Kubernetes the same jobs come from
  the ServiceMonitors/PodMonitors of :mod:`skyrig.monitoring.kube`.

Job names are shared with the rules (:mod:`skyrig.monitoring.alerts`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from skyrig.config import Stack
from skyrig.monitoring.alerts import (
    JOB_DCGM,
    JOB_PUSHGATEWAY,
    JOB_PVE,
    JOB_RAY_HEAD,
    JOB_RAY_WORKER,
)

LOOPBACK = "127.0.0.1"
#: Derived port bases are ``PORT_BASE_MIN + 10 * k`` for ``k < PORT_SLOTS``.
PORT_BASE_MIN = 29000
PORT_SLOTS = 300


@dataclass(frozen=True)
class LocalPorts:
    """Loopback ports of one stack's local monitoring stack (base .. base+7)."""

    prometheus: int
    alertmanager: int
    pushgateway: int
    node_exporter: int
    pve_exporter: int
    receiver: int

    def all(self) -> dict[str, int]:
        """Name -> port."""
        return dict(self.__dict__)


def local_ports(stack: Stack) -> LocalPorts:
    """Ports for ``stack``: ``skyrig:monitoring.local_port_base`` or one derived from the name.

    The derived base is ``29000 + 10 * (crc32(name) % 300)``, so different stacks on one machine
    get different ranges (29000-31999) unless their names collide; set ``local_port_base`` then.
    """
    base = stack.config.monitoring.local_port_base
    if base is None:
        base = PORT_BASE_MIN + 10 * (zlib.crc32(stack.name.encode()) % PORT_SLOTS)
    return LocalPorts(
        prometheus=base, alertmanager=base + 1, pushgateway=base + 2, node_exporter=base + 3,
        pve_exporter=base + 4, receiver=base + 5,
    )


def _job(name: str, targets: list[str], **extra: Any) -> dict[str, Any]:
    return {"job_name": name, "static_configs": [{"targets": targets}], **extra}


def scrape_configs(stack: Stack, *, pve_target: str | None = None) -> list[dict[str, Any]]:
    """The ``scrape_configs`` of Prometheus for ``stack``.

    ``pve_target`` is the Proxmox API host[:port] the PVE exporter queries (``pvesim``'s
    loopback address locally; the first node's address otherwise). Returns plain dicts in
    Prometheus' configuration format (prometheus.io/docs/prometheus/latest/configuration).
    """
    cfg = stack.config
    mon = cfg.monitoring
    if cfg.ray.mode == "local":
        p = local_ports(stack)
        lo = LOOPBACK
        return [
            _job("prometheus", [f"{lo}:{p.prometheus}"]),
            _job("alertmanager", [f"{lo}:{p.alertmanager}"]),
            _job(JOB_PUSHGATEWAY, [f"{lo}:{p.pushgateway}"], honor_labels=True),
            _job("node", [f"{lo}:{p.node_exporter}"]),
            _job(JOB_RAY_HEAD, [f"{lo}:{cfg.ray.metrics_export_port}"]),
            {
                "job_name": JOB_PVE,
                "metrics_path": "/pve",
                "params": {"module": ["default"], "cluster": ["1"], "node": ["1"]},
                "static_configs": [{"targets": [pve_target or "pvesim"]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"{lo}:{p.pve_exporter}"},
                ],
            },
        ]
    vms = cfg.vms
    node_targets = [f"{vm.ip}:{mon.node_exporter_port}" for vm in vms]
    node_targets += [f"{n.address}:{mon.node_exporter_port}" for n in cfg.nodes if n.address]
    jobs = [_job("node", node_targets)]
    if cfg.ray.mode == "vm":
        heads = [f"{vm.ip}:{cfg.ray.metrics_export_port}" for vm in vms if "ray_head" in vm.roles]
        workers = [
            f"{vm.ip}:{cfg.ray.metrics_export_port}" for vm in vms if "ray_worker" in vm.roles]
        jobs.append(_job(JOB_RAY_HEAD, heads))
        jobs.append(_job(JOB_RAY_WORKER, workers))
    if mon.dcgm_exporter:
        jobs.append(
            _job(
                JOB_DCGM,
                [f"{vm.ip}:{mon.dcgm_exporter_port}" for vm in vms if vm.gpus],
                metric_relabel_configs=[
                    {"source_labels": ["Hostname"], "target_label": "node"},
                    {"regex": "modelName", "action": "labeldrop"},
                ],
            )
        )
    return jobs


def prometheus_config(
    stack: Stack,
    *,
    rule_files: list[str],
    pve_target: str | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
) -> dict[str, Any]:
    """A whole ``prometheus.yml``: globals (``stack`` external label), rule files, Alertmanager
    (local stacks: the loopback one) and :func:`scrape_configs`. Intervals default to
    ``skyrig:monitoring.scrape_interval``; tests pass short ones."""
    mon = stack.config.monitoring
    interval = scrape_interval or mon.scrape_interval
    conf: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": evaluation_interval or interval,
            "external_labels": {"stack": stack.name, "environment": stack.config.environment},
        },
        "rule_files": rule_files,
        "scrape_configs": scrape_configs(stack, pve_target=pve_target),
    }
    if stack.config.ray.mode == "local":
        conf["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{LOOPBACK}:{local_ports(stack).alertmanager}"]}]}
            ]
        }
    return conf


def alertmanager_config(stack: Stack, *, receiver_url: str | None = None) -> dict[str, Any]:
    """``alertmanager.yml``: one route grouped by alert name and stack to the skyrig receiver
    webhook (local: ``http://127.0.0.1:<receiver>/alerts``), resolved alerts sent too."""
    url = receiver_url or f"http://{LOOPBACK}:{local_ports(stack).receiver}/alerts"
    return {
        "route": {
            "receiver": "skyrig",
            "group_by": ["alertname", "stack"],
            "group_wait": "5s",
            "group_interval": "10s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "skyrig",
             "webhook_configs": [{"url": url, "send_resolved": True}]},
        ],
    }
