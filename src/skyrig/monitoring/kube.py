"""Kubernetes objects of skyrig's monitoring (plain dicts, kube-prometheus-stack conventions).

:func:`kube_objects` returns, in a stable order:

* ``PrometheusRule`` ``skyrig`` with the same rule groups as the local rule file;
* ``PodMonitor`` ``ray-head`` / ``ray-workers`` (KubeRay ``config/prometheus/podMonitor.yaml``:
  pods labelled ``ray.io/node-type``, ports ``metrics``/``as-metrics``/``dash-metrics``, label
  ``ray_io_cluster``) with ``job`` set to the names the rules use;
* ``PodMonitor`` ``qso-anomaly`` for workload pods labelled ``app.kubernetes.io/name:
  qso-anomaly`` (port ``metrics``);
* DCGM exporter: ``ConfigMap`` with the counters CSV, ``DaemonSet`` on GPU nodes
  (``nvidia.com/gpu.present: "true"``), ``Service`` and ``ServiceMonitor`` (NVIDIA
  dcgm-exporter 4.5.3-4.8.2 ``dcgm-exporter.yaml`` / ``service-monitor.yaml``), relabelling
  ``Hostname`` to ``node`` and dropping ``modelName`` (cardinality);
* one ``ConfigMap`` per dashboard labelled ``grafana_dashboard: "1"`` (the kube-prometheus-stack
  Grafana sidecar's default label).

Every monitor and rule carries ``release: <RELEASE>`` so that kube-prometheus-stack's default
selectors (``*SelectorNilUsesHelmValues: true``) pick it up.
"""

from __future__ import annotations

import json
from typing import Any

from skyrig.config import Stack
from skyrig.monitoring.alerts import JOB_DCGM, JOB_RAY_HEAD, JOB_RAY_WORKER, rule_groups
from skyrig.monitoring.dashboards import dashboards
from skyrig.monitoring.dcgm import counters_csv

#: Helm release name of kube-prometheus-stack that skyrig's monitors/rules are labelled for.
RELEASE = "kube-prometheus-stack"
DCGM_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
DCGM_VERSION = "4.8.2"
PART_OF = {"app.kubernetes.io/part-of": "skyrig", "release": RELEASE}


def _meta(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**PART_OF, **labels}}


def _job_label(job: str) -> dict[str, Any]:
    return {"targetLabel": "job", "replacement": job, "action": "replace"}


def prometheus_rule(stack: Stack) -> dict[str, Any]:
    """The ``PrometheusRule`` holding every skyrig rule group."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta("skyrig", stack.config.monitoring.namespace),
        "spec": {"groups": rule_groups(stack)},
    }


def ray_pod_monitors(stack: Stack) -> list[dict[str, Any]]:
    """PodMonitors for Ray head and worker pods in any namespace (KubeRay's, templated)."""
    ns = stack.config.monitoring.namespace
    cluster_label = {
        "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
        "targetLabel": "ray_io_cluster",
        "action": "replace",
    }
    node_label = {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
        "action": "replace",
    }

    def endpoint(port: str, job: str) -> dict[str, Any]:
        return {"port": port, "relabelings": [cluster_label, node_label, _job_label(job)]}

    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta("ray-head", ns),
            "spec": {
                "namespaceSelector": {"any": True},
                "selector": {"matchLabels": {"ray.io/node-type": "head"}},
                "podMetricsEndpoints": [
                    endpoint("metrics", JOB_RAY_HEAD),
                    endpoint("as-metrics", "ray-autoscaler"),
                    endpoint("dash-metrics", "ray-dashboard"),
                ],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta("ray-workers", ns),
            "spec": {
                "namespaceSelector": {"any": True},
                "selector": {"matchLabels": {"ray.io/node-type": "worker"}},
                "podMetricsEndpoints": [endpoint("metrics", JOB_RAY_WORKER)],
            },
        },
    ]


def workload_pod_monitor(stack: Stack) -> dict[str, Any]:
    """PodMonitor for the workload's live ``anomaly_*`` exporter (pod port ``metrics``)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta("qso-anomaly", stack.config.monitoring.namespace),
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchLabels": {"app.kubernetes.io/name": "qso-anomaly"}},
            "podMetricsEndpoints": [
                {"port": "metrics", "relabelings": [_job_label("qso-anomaly")]}],
        },
    }


def dcgm_objects(stack: Stack) -> list[dict[str, Any]]:
    """ConfigMap (counters CSV), DaemonSet, Service and ServiceMonitor of the DCGM exporter."""
    mon = stack.config.monitoring
    ns = mon.namespace
    sel = {"app.kubernetes.io/name": "dcgm-exporter"}
    labels = {**sel, "app.kubernetes.io/version": DCGM_VERSION}
    csv_path = "/etc/dcgm-exporter/skyrig-counters.csv"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("dcgm-exporter-counters", ns, **labels),
            "data": {"skyrig-counters.csv": counters_csv()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("dcgm-exporter", ns, **labels),
            "spec": {
                "updateStrategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": sel},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "nodeSelector": {"nvidia.com/gpu.present": "true"},
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "dcgm-exporter",
                                "image": DCGM_IMAGE,
                                "args": ["-f", csv_path],
                                "env": [
                                    {"name": "DCGM_EXPORTER_LISTEN",
                                     "value": f":{mon.dcgm_exporter_port}"},
                                    {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                                    {"name": "NODE_NAME",
                                     "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                ],
                                "ports": [{"name": "metrics",
                                           "containerPort": mon.dcgm_exporter_port}],
                                "securityContext": {
                                    "runAsNonRoot": False,
                                    "runAsUser": 0,
                                    "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
                                    "allowPrivilegeEscalation": False,
                                },
                                "volumeMounts": [
                                    {"name": "pod-gpu-resources", "readOnly": True,
                                     "mountPath": "/var/lib/kubelet/pod-resources"},
                                    {"name": "counters", "readOnly": True,
                                     "mountPath": "/etc/dcgm-exporter/skyrig-counters.csv",
                                     "subPath": "skyrig-counters.csv"},
                                ],
                                "resources": {
                                    "limits": {"cpu": "200m", "memory": "256Mi"},
                                    "requests": {"cpu": "100m", "memory": "128Mi"},
                                },
                            }
                        ],
                        "volumes": [
                            {"name": "pod-gpu-resources",
                             "hostPath": {"path": "/var/lib/kubelet/pod-resources"}},
                            {"name": "counters",
                             "configMap": {"name": "dcgm-exporter-counters"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("dcgm-exporter", ns, **labels),
            "spec": {
                "selector": sel,
                "ports": [{"name": "metrics", "port": mon.dcgm_exporter_port}],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta("dcgm-exporter", ns, **labels),
            "spec": {
                "selector": {"matchLabels": sel},
                "endpoints": [
                    {
                        "port": "metrics",
                        "path": "/metrics",
                        "interval": mon.scrape_interval,
                        "relabelings": [_job_label(JOB_DCGM)],
                        "metricRelabelings": [
                            {"sourceLabels": ["Hostname"], "targetLabel": "node",
                             "action": "replace"},
                            {"regex": "modelName", "action": "labeldrop"},
                        ],
                    }
                ],
            },
        },
    ]


def dashboard_configmaps(stack: Stack) -> list[dict[str, Any]]:
    """One ConfigMap per skyrig dashboard, labelled ``grafana_dashboard: "1"``."""
    ns = stack.config.monitoring.namespace
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(f"skyrig-dashboard-{uid}", ns, grafana_dashboard="1"),
            "data": {f"{uid}.json": json.dumps(model, indent=1, sort_keys=True)},
        }
        for uid, model in dashboards(stack).items()
    ]


def kube_objects(stack: Stack) -> list[dict[str, Any]]:
    """All monitoring objects for ``stack`` (empty when ``skyrig:monitoring.enabled`` is off).

    The DCGM objects are left out when ``dcgm_exporter`` is off.
    """
    mon = stack.config.monitoring
    if not mon.enabled:
        return []
    objs: list[dict[str, Any]] = [prometheus_rule(stack), *ray_pod_monitors(stack),
                                  workload_pod_monitor(stack)]
    if mon.dcgm_exporter:
        objs += dcgm_objects(stack)
    objs += dashboard_configmaps(stack)
    return objs
