"""`skyrig render` of dev and prod: every object validates (strict built-in schemas, vendored
CRDs), goldens match, the RayJob fits the workload's own parser, the operator is the pinned
release."""

from __future__ import annotations

import copy
import difflib
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubesupport import GOLDEN, golden_text, read_render

from skyrig.config import load_stack
from skyrig.kube import build_kube
from skyrig.kube.objects import entrypoint_args, ray_image, workload_image
from skyrig.kube.validate import ManifestValidationError, problems, validate_objects
from skyrig.kube.vendor import kuberay_install
from skyrig.workflows.render import render_stack
from support import edit_stack, make_root, stack

pytestmark = pytest.mark.unit

STACKS = ("dev", "prod")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[Any]]]:
    out = tmp_path_factory.mktemp("render")
    result = {}
    for name in STACKS:
        files = render_stack(load_stack(name), out)
        kube = [f for f in files if f.parent.name == "kubernetes"]
        assert {f.name for f in kube} >= {"platform.yaml", "ray_cluster.yaml", "workload.yaml"}
        for f in kube:
            text = f.read_text()
            assert text.count("\n---\n") + text.startswith("---") >= 1
        result[name] = read_render(out, name)
    return result


@pytest.mark.parametrize("name", STACKS)
def test_every_rendered_object_validates(rendered: dict[str, Any], name: str) -> None:
    objs = [o for objs in rendered[name].values() for o in objs]
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "DaemonSet", "Deployment", "CustomResourceDefinition", "RayCluster",
            "RayJob", "ServiceMonitor", "PodMonitor", "NetworkPolicy", "ResourceQuota",
            "LimitRange", "Role", "RoleBinding", "PersistentVolumeClaim"} <= kinds
    k8s = build_kube(load_stack(name)).k8s_version
    assert k8s == "1.33.4"
    assert problems(objs, k8s) == []


def _prometheus_rule() -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "ray", "namespace": "skyrig-ray"},
            "spec": {"groups": [{"name": "ray", "rules": [
                {"alert": "RayHeadDown", "expr": "up == 0", "for": "5m",
                 "labels": {"severity": "critical"}}]}]}}


def _objects(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objs = [o for objs in rendered["prod"].values() for o in objs]
    first = {}
    for o in objs:
        first.setdefault(o["kind"], o)
    first["PrometheusRule"] = _prometheus_rule()
    return first


def _set(obj: dict[str, Any], path: list[Any], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _del(obj: dict[str, Any], path: list[Any]) -> None:
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


# (kind, mutation, path, value or None to delete, expected words)
MUTATIONS = [
    ("Deployment", "wrong type", ["spec", "replicas"], "two", "is not of type"),
    ("Deployment", "unknown field", ["spec", "template", "spec", "containers", 0, "imagePull"],
     "Always", "Additional properties"),
    ("Deployment", "missing required", ["spec", "selector"], None, "required property"),
    ("DaemonSet", "unknown field", ["spec", "template", "spec", "tolerance"], [], "Additional"),
    ("NetworkPolicy", "wrong type", ["spec", "policyTypes"], "Ingress", "is not of type"),
    ("RayCluster", "wrong type", ["spec", "workerGroupSpecs", 0, "maxReplicas"], "8",
     "is not of type"),
    ("RayCluster", "unknown field", ["spec", "headGroupSpec", "rayStartParam"], {},
     "Additional properties"),
    ("RayCluster", "missing required", ["spec", "headGroupSpec", "template"], None,
     "required property"),
    ("RayJob", "wrong type", ["spec", "shutdownAfterJobFinishes"], "yes", "is not of type"),
    ("RayJob", "unknown field", ["spec", "entryPoint"], "python", "Additional properties"),
    ("RayJob", "missing required", ["spec", "rayClusterSpec", "headGroupSpec"], None,
     "required property"),
    ("ServiceMonitor", "wrong type", ["spec", "endpoints"], "metrics", "is not of type"),
    ("ServiceMonitor", "unknown field", ["spec", "selectors"], {}, "Additional properties"),
    ("ServiceMonitor", "missing required", ["spec", "selector"], None, "required property"),
    ("PodMonitor", "wrong type", ["spec", "podMetricsEndpoints", 0, "port"], 8080,
     "is not of type"),
    ("PodMonitor", "unknown field", ["spec", "podMetricEndpoints"], [], "Additional"),
    ("PodMonitor", "missing required", ["spec", "selector"], None, "required property"),
    ("PrometheusRule", "wrong type", ["spec", "groups", 0, "rules"], "up == 0",
     "is not of type"),
    ("PrometheusRule", "unknown field", ["spec", "groups", 0, "rules", 0, "expression"], "up",
     "Additional properties"),
    ("PrometheusRule", "missing required", ["spec", "groups", 0, "name"], None,
     "required property"),
    ("RayJob", "unknown metadata field", ["metadata", "label"], {}, "Additional properties"),
]


@pytest.mark.parametrize(("kind", "what", "path", "value", "words"), MUTATIONS,
                         ids=[f"{m[0]}-{m[1]}" for m in MUTATIONS])
def test_mutated_copies_are_rejected(rendered: dict[str, Any], kind: str, what: str,
                                     path: list[Any], value: Any, words: str) -> None:
    original = _objects(rendered)[kind]
    assert problems([original], "1.33.4") == []
    bad = copy.deepcopy(original)
    if value is None:
        _del(bad, path)
    else:
        _set(bad, path, value)
    found = problems([bad], "1.33.4")
    assert found, f"{kind} with {what} at {path} was accepted"
    assert any(words in p.message for p in found), [p.render() for p in found]
    with pytest.raises(ManifestValidationError, match=kind):
        validate_objects([bad], "1.33.4")


@pytest.mark.parametrize("obj", [
    {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    {"apiVersion": "ray.io/v1", "kind": "RayWidget", "metadata": {"name": "w"}},
    {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}},
    {"kind": "Service", "metadata": {"name": "w"}},
])
def test_kind_without_schema_fails(obj: dict[str, Any]) -> None:
    found = problems([obj], "1.33.4")
    assert found and ("no schema" in found[0].message or "required" in found[0].message)


def test_builtin_validation_agrees_with_kubernetes_validate(rendered: dict[str, Any]) -> None:
    import kubernetes_validate

    objs = [o for objs in rendered["prod"].values() for o in objs]
    builtin = [o for o in objs if not o["apiVersion"].startswith(("ray.io", "monitoring."))
               and o["kind"] != "CustomResourceDefinition"]
    assert len(builtin) > 20
    for o in builtin:
        kubernetes_validate.validate(o, "1.33.4", strict=True)
    bad = copy.deepcopy(builtin[0])
    bad["metadata"]["nam"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33.4", strict=True)
    assert problems([bad], "1.33.4")


@pytest.mark.parametrize("name", STACKS)
def test_rayjob_entrypoint_is_accepted_by_the_workload_parser(
    rendered: dict[str, Any], name: str
) -> None:
    from qso_anomaly.pipeline import build_parser, config_from_args

    st = load_stack(name)
    w = st.config.workload
    (job,) = [o for o in rendered[name]["workload"] if o["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "qso_anomaly.pipeline"]
    assert argv[3:] == entrypoint_args(st)
    args = build_parser().parse_args(argv[3:])  # SystemExit on an unknown or malformed flag
    cfg = config_from_args(argv[3:])
    assert (cfg.model_alias, cfg.framework, cfg.n_spectra, cfg.seed) == (
        w.model_alias, w.framework, w.n_spectra, w.seed)
    assert cfg.expect_version == w.version and cfg.use_ray is True
    assert cfg.use_gpu is w.use_gpu
    assert args.out.startswith(st.config.platform.results.mount_path + "/")
    expected_uri = (w.tracking_uri if st.config.platform.mlflow.mode == "external"
                    else "http://mlflow.skyrig-ray.svc.cluster.local:5000")
    assert cfg.tracking_uri == expected_uri
    # the image is the pinned workload release, on the RayJob's cluster and its submitter
    image = workload_image(st)
    assert image.endswith(f":{w.version}-cuda")
    spec = job["spec"]
    assert spec["submitterPodTemplate"]["spec"]["containers"][0]["image"] == image
    for c in (spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
              + spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]):
        assert c["image"] == image
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] >= 0 and spec["backoffLimit"] == 0
    assert w.version.replace(".", "-") in job["metadata"]["name"]
    assert w.model_alias in job["metadata"]["name"]


def test_rayjob_argument_the_parser_rejects_is_caught() -> None:
    from qso_anomaly.pipeline import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--framework", "tensorflow"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data-location", "/data"])


@pytest.mark.parametrize("name", STACKS)
def test_operator_is_the_pinned_kuberay_release(rendered: dict[str, Any], name: str) -> None:
    st = load_stack(name)
    version = st.config.ray.kuberay_version
    platform = rendered[name]["platform"]
    (dep,) = [o for o in platform if o["kind"] == "Deployment"
              and o["metadata"]["name"] == "kuberay-operator"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"quay.io/kuberay/operator:v{version}")
    assert dep["metadata"]["namespace"] == st.config.platform.operator_namespace
    crds = {o["metadata"]["name"]: o for o in platform if o["kind"] == "CustomResourceDefinition"}
    vendored = {o["metadata"]["name"]: o for o in kuberay_install(str(version))
                if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io",
                         "raycronjobs.ray.io"} == set(vendored)
    for crd_name, crd in crds.items():
        assert crd["spec"] == vendored[crd_name]["spec"]
    # the binding points at the operator's ServiceAccount in the operator namespace
    (crb,) = [o for o in platform if o["kind"] == "ClusterRoleBinding"]
    assert crb["subjects"][0]["namespace"] == st.config.platform.operator_namespace


@pytest.mark.parametrize("name", STACKS)
def test_gpu_scheduling_and_pod_security(rendered: dict[str, Any], name: str) -> None:
    st = load_stack(name)
    r = st.config.ray
    (rc,) = [o for o in rendered[name]["ray_cluster"] if o["kind"] == "RayCluster"]
    assert rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == (
        ray_image(st))
    assert ray_image(st) == "rayproject/ray:2.52.0-py311-cu128"
    (wg,) = rc["spec"]["workerGroupSpecs"]
    pod = wg["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-RTX-A4000"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"])
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == str(r.gpus_per_worker)
    vm_class = st.config.vm_classes["gpu-worker"]
    p = st.config.platform
    assert res["requests"]["cpu"] == str(vm_class.cores - p.system_reserve_cpu)
    assert res["requests"]["memory"] == f"{vm_class.memory_mib - p.system_reserve_memory_mib}Mi"
    assert (wg["minReplicas"], wg["maxReplicas"]) == (r.gpu_workers_min, r.gpu_workers_max)
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    assert wg["rayStartParams"]["object-store-memory"] == str(
        r.object_store_memory_mib * 1024 * 1024)
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True and not mounts["results"].get("readOnly")
    namespaces = {o["metadata"]["name"]: o["metadata"]["labels"]
                  for o in rendered[name]["platform"] if o["kind"] == "Namespace"}
    assert namespaces["skyrig-ray"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces["kuberay-system"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces["nvidia-device-plugin"]["pod-security.kubernetes.io/enforce"] == (
        "privileged")
    (ds,) = [o for o in rendered[name]["platform"] if o["kind"] == "DaemonSet"
             and o["metadata"]["name"] == "nvidia-device-plugin-daemonset"]
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == pod["nodeSelector"]
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v0.20.0")
    # every pod in a restricted namespace runs as non-root without privilege escalation
    for o in [*rendered[name]["ray_cluster"], *rendered[name]["workload"]]:
        for tmpl in _pod_templates(o):
            assert tmpl["securityContext"]["runAsNonRoot"] is True
            for c in tmpl["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Deployment":
        return [spec["template"]["spec"]]
    cluster = spec.get("rayClusterSpec", spec) if obj["kind"] in ("RayCluster", "RayJob") else None
    if cluster is None:
        return []
    out = [cluster["headGroupSpec"]["template"]["spec"]]
    out += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    if obj["kind"] == "RayJob":
        out.append(spec["submitterPodTemplate"]["spec"])
    return out


def test_least_privilege_and_network_policies(rendered: dict[str, Any]) -> None:
    platform = rendered["prod"]["platform"]
    (role,) = [o for o in platform if o["kind"] == "Role"
               and o["metadata"]["name"] == "skyrig-job-submitter"]
    assert role["metadata"]["namespace"] == "skyrig-ray"
    writes = [r for r in role["rules"] if "create" in r["verbs"]]
    assert writes == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch",
                                 "delete"]}]
    pols = {o["metadata"]["name"]: o["spec"] for o in platform if o["kind"] == "NetworkPolicy"}
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    scrape = pols["metrics-scrape"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert scrape["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert "ray-to-mlflow" in pols and "autoscaler-to-api-server" in pols


@pytest.mark.parametrize("name", STACKS)
def test_golden_render(rendered: dict[str, Any], name: str) -> None:
    for component, objs in rendered[name].items():
        golden = GOLDEN / name / f"{component}.yaml"
        text = golden_text(objs)
        if os.environ.get("SKYRIG_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        want = golden.read_text()
        if text != want:
            diff = "".join(difflib.unified_diff(
                want.splitlines(True), text.splitlines(True), f"golden/{name}/{component}.yaml",
                "rendered"))
            pytest.fail(f"render of {name}/{component} differs from the golden file"
                        f" (SKYRIG_UPDATE_GOLDEN=1 refreshes it):\n{diff}")


def test_stack_change_shows_as_a_readable_diff(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "prod", "gpu_workers_max: 8", "gpu_workers_max: 6")
    edit_stack(root, "prod", "concurrency: 14", "concurrency: 12")  # 6 pods hold 12 actors
    out = tmp_path / "out"
    render_stack(stack(root, "prod"), out)
    new = golden_text(read_render(out, "prod")["ray_cluster"])
    old = (GOLDEN / "prod" / "ray_cluster.yaml").read_text()
    diff = [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert diff == ["-    maxReplicas: 8", "+    maxReplicas: 6"]


def test_local_stack_renders_no_kubernetes(tmp_path: Path) -> None:
    files = render_stack(load_stack("local"), tmp_path)
    assert not [f for f in files if "kubernetes" in f.parts]


def test_yaml_files_are_plain_yaml(rendered: dict[str, Any]) -> None:
    text = yaml.safe_dump_all(rendered["dev"]["workload"])
    assert "!!python" not in text


def test_plan_shows_platform_objects() -> None:
    import json

    from typer.testing import CliRunner

    from skyrig.cli import app

    result = CliRunner().invoke(app, ["plan", "--stack", "prod", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["kubernetes"]
    kinds = {(r["component"], r["kind"]) for r in rows}
    assert ("ray_cluster", "RayCluster") in kinds and ("workload", "RayJob") in kinds
    assert ("platform", "DaemonSet") in kinds
