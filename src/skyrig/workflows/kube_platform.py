"""The platform and workload layers of ``skyrig up`` for Kubernetes stacks (dev, prod).

Order of checks, so that nothing changes before every precondition holds:

1. a kubeconfig (three sources, :data:`KUBECONFIG_SOURCES`), else exit 2 saying how to give one;
2. the API server it names answers a TCP connect within ``platform.api_timeout_s``, else exit 1
   naming that server (nothing was changed);
3. platform: ``pulumi up`` of ``stacks/__main__.py`` through the Automation API (the program
   deploys GpuPlatform, RayClusterComponent and WorkloadRelease when a kubeconfig is given);
   without the Pulumi CLI: exit 2 with the offline alternative (``skyrig render`` +
   ``kubectl apply --server-side``);
4. workload: create the release's RayJob (kubernetes Python client) and follow its status.

No Kubernetes API server can run on the development machines: steps 3-4 are exercised only
against a real cluster; steps 1-2 are tested.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import yaml
from rich.console import Console

from skyrig.config import Stack
from skyrig.errors import SkyrigError
from skyrig.kube import build_kube
from skyrig.kube.objects import release_name

KUBECONFIG_FILE = "kubeconfig"


class PlatformUnavailable(SkyrigError):
    """A precondition of the platform layer is missing (kubeconfig, Pulumi CLI): usage error."""

    exit_code = 2


class ApiServerUnreachable(SkyrigError):
    """The Kubernetes API server named by the kubeconfig did not answer."""


def kubeconfig_sources(stack: Stack) -> list[str]:
    """The three ways to give skyrig a kubeconfig, in the order they are tried."""
    ref = stack.config.platform.kubeconfig
    var = ref.env if ref is not None and ref.env else "SKYRIG_KUBECONFIG"
    return [
        f"`pulumi config set --secret` the kubeconfig as skyrig:platform.kubeconfig.secure"
        f" (read by `pulumi up -s {stack.name}`)",
        f"export {var}=\"$(cat kubeconfig)\" (skyrig:platform.kubeconfig.env names the"
        " variable)",
        f"the file {stack.state_dir / KUBECONFIG_FILE} that `skyrig ansible run k8s --stack"
        f" {stack.name}` fetches from the first k3s server",
    ]


@dataclass(frozen=True)
class KubeAccess:
    """A kubeconfig's text (a secret: never logged) and where it came from."""

    text: str
    source: str

    @property
    def server(self) -> str:
        """The API server URL of the kubeconfig's current context."""
        return api_server(self.text, self.source)


def find_kubeconfig(stack: Stack) -> KubeAccess | None:
    """The kubeconfig from the variable the stack names, else the fetched file; None if neither
    (a ``secure:`` value can only be decrypted by ``pulumi up``)."""
    ref = stack.config.platform.kubeconfig
    if ref is not None and ref.env and os.environ.get(ref.env):
        return KubeAccess(os.environ[ref.env], f"${ref.env}")
    f = stack.state_dir / KUBECONFIG_FILE
    if f.is_file():
        return KubeAccess(f.read_text("utf-8"), str(f))
    return None


def require_kubeconfig(stack: Stack) -> KubeAccess:
    """:func:`find_kubeconfig` or :class:`PlatformUnavailable` (exit 2) naming the three ways."""
    access = find_kubeconfig(stack)
    if access is None:
        ways = "\n".join(f"  {i}. {w}" for i, w in enumerate(kubeconfig_sources(stack), 1))
        raise PlatformUnavailable(
            f"no kubeconfig for stack {stack.name}; the platform layer needs one. Give it in one"
            f" of three ways:\n{ways}",
            hint=f"then re-run `skyrig up --stack {stack.name} --only platform`")
    return access


def api_server(text: str, source: str) -> str:
    """``clusters[current-context].server`` of a kubeconfig (raises PlatformUnavailable)."""
    try:
        doc: dict[str, Any] = yaml.safe_load(text) or {}
        ctx_name = str(doc.get("current-context"))
        contexts: dict[str, Any] = {c["name"]: c["context"] for c in doc.get("contexts", [])}
        context: dict[str, Any] = contexts.get(ctx_name) or next(iter(contexts.values()), {})
        cluster = str(context.get("cluster"))
        clusters: dict[str, Any] = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}
        server = (clusters.get(cluster) or next(iter(clusters.values())))["server"]
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, StopIteration) as exc:
        raise PlatformUnavailable(f"the kubeconfig from {source} names no API server ({exc})",
                                  hint="use the kubeconfig k3s writes (/etc/rancher/k3s/k3s.yaml)"
                                  " with the server's address") from None
    return str(server)


def check_api_server(access: KubeAccess, timeout_s: float) -> None:
    """Connect to the API server within ``timeout_s`` or raise :class:`ApiServerUnreachable`."""
    url = urlparse(access.server)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise ApiServerUnreachable(
            f"the Kubernetes API server {access.server} (kubeconfig from {access.source}) did not"
            f" answer within {timeout_s:g} s: {exc}",
            hint="check that k3s runs on the first control-plane VM and that this machine can"
            " reach it (`kubectl --kubeconfig ... get nodes`); nothing was changed") from None


def _preflight(stack: Stack, console: Console) -> KubeAccess:
    access = require_kubeconfig(stack)
    timeout = stack.config.platform.api_timeout_s
    console.print(f"  kubeconfig from {access.source}; API server {access.server}")
    check_api_server(access, timeout)
    return access


def platform_up(stack: Stack, console: Console) -> dict[str, Any]:
    """Deploy the platform through ``pulumi up`` (Automation API). Raises PlatformUnavailable
    (exit 2) without kubeconfig or Pulumi CLI, ApiServerUnreachable (exit 1)."""
    access = _preflight(stack, console)
    kp = build_kube(stack)
    from skyrig.pulumi.automation import pulumi_cli

    if pulumi_cli() is None:
        raise PlatformUnavailable(
            "the platform layer deploys through `pulumi up`, and the Pulumi CLI is not"
            " installed here",
            hint=f"install the Pulumi CLI and re-run, or apply the same objects without it:"
            f" `skyrig render --stack {stack.name} --out out` then `kubectl apply"
            f" --server-side -f out/{stack.name}/kubernetes/platform.yaml` (then ray_cluster,"
            " workload)")
    from pulumi import automation as auto

    backend = stack.state_dir / "pulumi"
    backend.mkdir(parents=True, exist_ok=True)
    var = (stack.config.platform.kubeconfig.env if stack.config.platform.kubeconfig
           and stack.config.platform.kubeconfig.env else "SKYRIG_KUBECONFIG")
    env = {"PULUMI_BACKEND_URL": backend.resolve().as_uri(),
           "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
           "PULUMI_SKIP_UPDATE_CHECK": "true", var: access.text}
    opts = auto.LocalWorkspaceOptions(work_dir=str(stack.root), env_vars=env)
    st = auto.create_or_select_stack(stack_name=stack.name, work_dir=str(stack.root), opts=opts)
    st.up(on_output=lambda line: console.print(line, end="", markup=False, highlight=False))
    return {"path": "pulumi", "objects": len(kp.objects()), "api_server": access.server}


def workload_up(stack: Stack, console: Console) -> dict[str, Any]:
    """Create the release's RayJob (if absent) and wait for it with progress."""
    access = _preflight(stack, console)
    try:
        from kubernetes import client, config
    except ImportError:
        raise PlatformUnavailable(
            "submitting and following the RayJob needs the `kubernetes` Python client",
            hint="pip install kubernetes (or apply workload.yaml with kubectl and follow"
            " `kubectl get rayjob -w`)") from None
    kp = build_kube(stack)
    (job,) = [o for o in kp.workload if o["kind"] == "RayJob"]
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    api = client.CustomObjectsApi(config.new_client_from_config_dict(yaml.safe_load(access.text)))
    group = {"group": "ray.io", "version": "v1", "namespace": ns, "plural": "rayjobs"}
    timeout = stack.config.platform.api_timeout_s
    try:
        api.get_namespaced_custom_object(name=name, _request_timeout=timeout, **group)
        console.print(f"  RayJob {ns}/{name} exists; following it")
    except client.ApiException as exc:
        if exc.status != 404:
            raise SkyrigError(f"reading RayJob {ns}/{name} failed: {exc.reason}") from None
        api.create_namespaced_custom_object(body=job, _request_timeout=timeout, **group)
        console.print(f"  created RayJob {ns}/{name}")
    deadline = time.monotonic() + stack.config.platform.job_deadline_s
    last = ""
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(name=name, _request_timeout=timeout, **group)
        status = obj.get("status", {})
        state = f"{status.get('jobDeploymentStatus', 'New')}/{status.get('jobStatus', '-')}"
        if state != last:
            console.print(f"  [{time.monotonic() - t0:6.0f} s] {name}: {state}")
            last = state
        if status.get("jobDeploymentStatus") in ("Complete", "Failed"):
            ok = status.get("jobStatus") == "SUCCEEDED"
            result = {"rayjob": f"{ns}/{name}", "status": status.get("jobStatus"),
                      "message": status.get("message", ""),
                      "results": f"{stack.config.platform.results.claim_name}:"
                                 f"/{release_name(stack)}"}
            if not ok:
                raise SkyrigError(f"RayJob {ns}/{name} ended {state}: {result['message']}",
                                  hint=f"kubectl -n {ns} logs job/{name} (runbooks/"
                                  "rayjob-failed.md)")
            return result
        time.sleep(5)
    raise SkyrigError(f"RayJob {ns}/{name} did not finish within"
                      f" {stack.config.platform.job_deadline_s} s (last state {last})")


def kept_on_down(stack: Stack, layer: str) -> str:
    """What ``skyrig down`` leaves of a Kubernetes stack's ``layer``, and how to remove it.

    skyrig does not delete Kubernetes objects: the namespace of the workload holds the data and
    results PersistentVolumeClaims (and the in-cluster MLflow store), and deleting a namespace
    deletes every claim in it (Kubernetes docs, "Namespaces": deletion removes all resources
    in the namespace), which with a ``Delete`` reclaim policy deletes the data. Destroying the
    VMs (the ``infra`` layer) removes the k3s cluster itself.

    Args:
        stack: A stack with ``ray.mode: kuberay``.
        layer: ``platform`` or ``workload``.

    Returns:
        One paragraph: what stays, and the commands that remove it deliberately.
    """
    kp = build_kube(stack)
    ns = stack.config.platform.namespace
    claims = ", ".join(o["metadata"]["name"] for o in kp.workload
                       if o["kind"] == "PersistentVolumeClaim")
    if layer == "workload":
        job = release_name(stack)
        return (f"the RayJob {ns}/{job} is left as it is (skyrig does not delete Kubernetes"
                f" objects); stop it with `kubectl -n {ns} delete rayjob {job}` (its Ray"
                " cluster goes with it; results stay on the results volume)")
    out = f"out/{stack.name}/kubernetes"
    return (f"the Kubernetes platform of stack {stack.name} is left as it is: deleting it would"
            f" delete namespace {ns} and with it the PersistentVolumeClaims {claims} (what the"
            " workload reads and writes: data, results, MLflow store). To remove it"
            " deliberately: `pulumi destroy -s"
            f" {stack.name}`, or `skyrig render --stack {stack.name} --out out` then `kubectl"
            f" delete -f {out}/ray_cluster.yaml` and, after backing up the data, `kubectl delete"
            f" -f {out}/workload.yaml -f {out}/platform.yaml`. `skyrig down` of the infra layer"
            " destroys the VMs and the k3s cluster on them.")
