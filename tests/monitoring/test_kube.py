"""Kubernetes objects of monitoring: prometheus-operator CRs validate against the vendored CRD
schemas with unknown fields rejected; built-in kinds validate with kubernetes-validate (strict);
dashboards are Grafana models built with grafana-foundation-sdk."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from skyrig.config import load_stack
from skyrig.monitoring import dashboards, kube_objects
from skyrig.monitoring.dcgm import COUNTERS, counters_csv

pytestmark = pytest.mark.unit

VENDOR = Path(__file__).resolve().parents[2] / "src/skyrig/monitoring/vendor/prometheus-operator"
CRD_FILES = {
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
}


def _closed(schema: Any) -> Any:
    """Reject unknown fields: every object schema with ``properties`` and no explicit
    ``additionalProperties``/``x-kubernetes-preserve-unknown-fields`` becomes closed (the API
    server's structural-schema pruning, turned into an error as ``kubectl --validate=strict``)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def _schema(kind: str) -> dict[str, Any]:
    crd = next(d for d in yaml.safe_load_all((VENDOR / CRD_FILES[kind]).read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return schema


def validate_cr(obj: dict[str, Any]) -> None:
    """Validate one monitoring.coreos.com/v1 object; a kind without a schema fails."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    if obj["kind"] not in CRD_FILES:
        raise AssertionError(f"no vendored CRD schema for {obj['kind']}")
    # no metaschema check: the CRDs carry Go regexes (`^(?i)...`) Python's re cannot compile
    jsonschema.Draft7Validator(_schema(obj["kind"])).validate(obj)


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
def test_custom_resources_validate_against_vendored_crds(name: str) -> None:
    objs = kube_objects(load_stack(name))
    crs = [o for o in objs if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in crs} >= {"PrometheusRule", "PodMonitor"}
    for o in crs:
        validate_cr(o)


def test_unknown_field_in_a_custom_resource_is_rejected() -> None:
    rule = next(o for o in kube_objects(load_stack("prod")) if o["kind"] == "PrometheusRule")
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["bogus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_cr(bad)


def test_builtin_kinds_validate_strictly() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    objs = kube_objects(load_stack("prod"))
    builtins = [o for o in objs if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in builtins} == {"ConfigMap", "DaemonSet", "Service"}
    for o in builtins:
        kv.validate(o, "1.31", strict=True)


def test_prod_objects_carry_release_label_dcgm_and_dashboards() -> None:
    objs = kube_objects(load_stack("prod"))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert ("DaemonSet", "dcgm-exporter") in kinds
    assert ("ServiceMonitor", "dcgm-exporter") in kinds
    cms = [o for o in objs if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(cms) == 4
    for o in objs:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            assert o["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    counters = next(o for o in objs if o["metadata"]["name"] == "dcgm-exporter-counters")
    text = counters["data"]["skyrig-counters.csv"]
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter" in text
    assert "DCGM_FI_DEV_THERMAL_VIOLATION, counter" in text


def test_local_stack_has_no_dcgm_objects_and_disabled_has_none() -> None:
    objs = kube_objects(load_stack("local"))  # local: dcgm_exporter false
    assert not [o for o in objs if "dcgm" in o["metadata"]["name"]]


def test_counters_csv_parses_like_upstream() -> None:
    rows = [[f.strip() for f in line.split(",", 2)]
            for line in counters_csv().splitlines() if line and not line.startswith("#")]
    assert [r[0] for r in rows] == [c[0] for c in COUNTERS]
    assert {r[1] for r in rows} <= {"gauge", "counter", "label"}


def test_dashboards_are_grafana_models_with_prometheus_queries() -> None:
    ds = dashboards(load_stack("prod"))
    assert set(ds) == {"skyrig-overview", "skyrig-gpu", "skyrig-ray", "skyrig-workload"}
    for uid, d in ds.items():
        assert d["uid"] == uid and d["title"]
        assert d["templating"]["list"][0]["type"] == "datasource"
        panels = [p for p in d["panels"] if p["type"] != "row"]
        assert panels, uid
        for p in panels:
            assert p["targets"], (uid, p["title"])
            for t in p["targets"]:
                assert t["expr"], (uid, p["title"])
        json.dumps(d)
    gpu = json.dumps(ds["skyrig-gpu"])
    assert "DCGM_FI_DEV_GPU_TEMP" in gpu and "85" in gpu


def test_counters_are_upstream_dcgm_fields() -> None:
    """skyrig's CSV only uses fields of the vendored upstream list (active or commented out)."""
    upstream = (VENDOR.parent / "dcgm-exporter" / "default-counters.csv").read_text()
    fields = {line.lstrip("# ").split(",")[0].strip() for line in upstream.splitlines()
              if line.lstrip("# ").startswith("DCGM_FI_")}
    assert {c[0] for c in COUNTERS} <= fields
