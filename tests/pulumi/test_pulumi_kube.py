"""stacks/__main__.py under Pulumi mocks with and without a kubeconfig: the platform components
and their nested inputs (GPU limits, node selectors, tolerations, images, the RayJob
entrypoint), secrets, and no Kubernetes resource at all when no kubeconfig is available."""

from __future__ import annotations

import json
import runpy
import shlex
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from support import REPO, make_root

pytestmark = pytest.mark.unit

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: k3s, cluster: {server: "https://10.42.10.21:6443",
  certificate-authority-data: Q0EK}}]
contexts: [{name: k3s, context: {cluster: k3s, user: admin}}]
current-context: k3s
users: [{name: admin, user: {token: super-secret-admin-token}}]
"""


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []
        self.warnings: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        if args.token == "kubernetes:yaml:decode":
            docs = yaml.load_all(args.args["text"], Loader=yaml.CSafeLoader)
            return {"result": [d for d in docs if d]}, []
        return {}, []


def run_stack(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              kubeconfig: str | None) -> tuple[Mocks, dict[str, Any]]:
    root = make_root(tmp_path)
    monkeypatch.setenv("SKYRIG_ROOT", str(root))
    monkeypatch.delenv("SKYRIG_STATE_DIR", raising=False)
    monkeypatch.delenv("SKYRIG_PVESIM_ENDPOINT", raising=False)
    monkeypatch.setenv("SKYRIG_PROXMOX_TOKEN_SECRET", "mock-token-secret")
    if kubeconfig is None:
        monkeypatch.delenv("SKYRIG_KUBECONFIG", raising=False)
    else:
        monkeypatch.setenv("SKYRIG_KUBECONFIG", kubeconfig)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="skyrig", stack=name, preview=False)
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(msg))
    program = runpy.run_path(str(REPO / "stacks" / "__main__.py"))
    mocks.warnings = warned
    return mocks, program


def _of(mocks: Mocks, typ: str) -> list[dict[str, Any]]:
    return [i for t, _, i in mocks.resources if t == typ]


@pytest.mark.parametrize("name", ["dev", "prod"])
@pulumi.runtime.test
def test_platform_components_with_nested_inputs(name: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> Any:
    mocks, program = run_stack(name, tmp_path, monkeypatch, KUBECONFIG)
    stack = program["stack"]
    w, r = stack.config.workload, stack.config.ray

    def check(args: list[Any]) -> None:
        types = [t for t, _, _ in mocks.resources]
        for token in ("skyrig:kube:GpuPlatform", "skyrig:kube:RayCluster",
                      "skyrig:kube:WorkloadRelease", "pulumi:providers:kubernetes"):
            assert types.count(token) == 1, token
        (ds,) = [i for i in _of(mocks, "kubernetes:apps/v1:DaemonSet")
                 if i["metadata"]["name"] == "nvidia-device-plugin-daemonset"]
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-RTX-A4000"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        (rc,) = _of(mocks, "kubernetes:ray.io/v1:RayCluster")
        (wg,) = rc["spec"]["workerGroupSpecs"]
        c = wg["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(r.gpus_per_worker)
        assert wg["template"]["spec"]["nodeSelector"] == pod["nodeSelector"]
        assert c["image"] == f"rayproject/ray:{r.version}-py311-cu128"
        assert int(wg["maxReplicas"]) == r.gpu_workers_max
        (job,) = _of(mocks, "kubernetes:ray.io/v1:RayJob")
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:3] == ["python", "-m", "qso_anomaly.pipeline"]
        assert argv[argv.index("--model-alias") + 1] == w.model_alias
        assert argv[argv.index("--expect-version") + 1] == w.version
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["image"].endswith(f":{w.version}-cuda")
        (crds,) = _of(mocks, "kubernetes:yaml/v2:ConfigGroup")
        assert crds["yaml"].count("kind: CustomResourceDefinition") == 4
        (deploy,) = [i for i in _of(mocks, "kubernetes:apps/v1:Deployment")
                     if i["metadata"]["name"] == "kuberay-operator"]
        assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == (
            f"quay.io/kuberay/operator:v{r.kuberay_version}")
        (token,) = _of(mocks, "kubernetes:core/v1:Secret")
        assert token["type"] == "kubernetes.io/service-account-token"
        # nothing secret in plain inputs of any child resource
        plain = json.dumps([i for t, _, i in mocks.resources
                            if t != "pulumi:providers:kubernetes"], default=str)
        assert "super-secret-admin-token" not in plain

    platform = program["platform"]
    groups = [platform.group, program["ray_cluster"].group, program["release"].group,
              platform.secrets]
    children = pulumi.Output.all(*[g.resources for g in groups]).apply(
        lambda maps: pulumi.Output.all(*[r.urn for m in maps for r in m.values()]))
    flags = pulumi.Output.all(program["kubeconfig"].is_secret(),
                              platform.submitter_token_secret.is_secret())

    def check_secrets(values: list[bool]) -> None:
        assert values == [True, True]

    return pulumi.Output.all(children.apply(check), flags.apply(check_secrets))


@pytest.mark.parametrize("name", ["dev", "prod"])
@pulumi.runtime.test
def test_no_kubeconfig_no_kubernetes_resources(name: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> Any:
    mocks, program = run_stack(name, tmp_path, monkeypatch, None)

    def check(_: Any) -> None:
        assert not [t for t, _, _ in mocks.resources if t.startswith(("kubernetes:", "skyrig:kube",
                                                                       "pulumi:providers:kub"))]
        (msg,) = mocks.warnings
        assert "no kubeconfig" in msg and "pulumi config set --secret" in msg
        assert "SKYRIG_KUBECONFIG" in msg and f".skyrig/{name}/kubeconfig" in msg

    return program["cluster"].urn.apply(check)


@pulumi.runtime.test
def test_kubeconfig_file_from_the_k8s_playbook_is_used(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> Any:
    root = make_root(tmp_path)
    (root / ".skyrig" / "dev").mkdir(parents=True)
    (root / ".skyrig" / "dev" / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setattr("support.make_root", lambda _tmp: root)
    mocks, program = run_stack("dev", tmp_path, monkeypatch, None)

    def check(_: Any) -> None:
        assert _of(mocks, "kubernetes:ray.io/v1:RayJob")
        assert not mocks.warnings

    return program["release"].group.resources.apply(
        lambda m: pulumi.Output.all(*[r.urn for r in m.values()])).apply(check)
