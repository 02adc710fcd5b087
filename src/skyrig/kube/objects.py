"""The Kubernetes objects of a stack's platform, Ray cluster and workload (plain dicts, no I/O).

Every function takes the validated :class:`~skyrig.config.Stack` and returns objects ready for
``kubectl apply`` or pulumi-kubernetes. Sources of the rules followed: Pod Security Standards
(``restricted`` profile: non-root, no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp), KubeRay v1.7 RayCluster/RayJob API (``ray-operator/apis/ray/v1``), NVIDIA
k8s-device-plugin static manifests, Kubernetes NetworkPolicy semantics (policies are additive;
a pod selected by any policy only gets what some policy allows).
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlparse

import yaml

from skyrig.config import Stack
from skyrig.config.checks import effective
from skyrig.config.compat import gpu_model, matrix, version_tuple
from skyrig.kube.vendor import Obj, device_plugin_manifests, kuberay_install
from skyrig.plan.workload import input_args, scoring_env, scoring_gpu_workers

MANAGED_BY = {"app.kubernetes.io/managed-by": "skyrig", "app.kubernetes.io/part-of": "skyrig"}
DEVICE_PLUGIN_NAMESPACE = "nvidia-device-plugin"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
WORKER_GROUP = "a4000"
SUBMITTER = "skyrig-job-submitter"
MLFLOW = "mlflow"
RAY_UID = 1000  # the `ray` user of rayproject/ray and of the qso-anomaly image
RAY_GID = 100
HEAD_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001}
API_SERVER_PORT = 6443  # k3s supervisor/API port on the control-plane VMs
WORKER_PROCESS_MEMORY_MIB = 2048  # Ray worker processes besides the object store (checks.py)


def labels(stack: Stack, component: str, **extra: str) -> dict[str, str]:
    """Return the labels every skyrig object carries (stack, component, managed-by).

    Uses the Kubernetes recommended labels (``app.kubernetes.io/managed-by``, ``part-of``,
    ``component``) plus ``skyrig.io/stack``.

    Args:
        stack: The validated stack.
        component: Value of ``app.kubernetes.io/component``, e.g. ``ray-head``.
        **extra: Further labels.

    Returns:
        The label map; ``extra`` entries override the defaults.
    """
    return {**MANAGED_BY, "app.kubernetes.io/component": component,
            "skyrig.io/stack": stack.name, **extra}


def k8s_version(stack: Stack) -> str:
    """Return the Kubernetes release the manifests target.

    Args:
        stack: The validated stack.

    Returns:
        ``major.minor.patch`` of ``kubernetes.version``, e.g. ``v1.33.4+k3s1`` → ``1.33.4``.
    """
    return ".".join(str(p) for p in version_tuple(stack.config.kubernetes.version)[:3])


def _meta(name: str, stack: Stack, component: str, namespace: str | None = None,
          **extra: str) -> Obj:
    meta: Obj = {"name": name, "labels": labels(stack, component, **extra)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def restricted_container() -> Obj:
    """Return the container securityContext of the Pod Security Standards ``restricted`` profile.

    Kubernetes Pod Security Standards, ``restricted``: no privilege escalation, all capabilities
    dropped, non-root, ``RuntimeDefault`` seccomp.

    Returns:
        A new securityContext dict.
    """
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_pod(uid: int = RAY_UID, gid: int = RAY_GID) -> Obj:
    """Return the pod securityContext of the PSS ``restricted`` profile (fixed non-root uid/gid).

    Kubernetes Pod Security Standards, ``restricted``; ``fsGroup`` makes mounted volumes writable
    by ``gid``.

    Args:
        uid: ``runAsUser`` (default 1000, the ``ray`` user of rayproject/ray).
        gid: ``runAsGroup`` and ``fsGroup`` (default 100).

    Returns:
        A new securityContext dict.
    """
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def gpu_toleration() -> Obj:
    """Return the toleration of the taint the k8s_node role puts on GPU nodes.

    The taint is ``nvidia.com/gpu=present:NoSchedule``, the key NVIDIA's device-plugin DaemonSet
    tolerates; the toleration matches any value.

    Returns:
        ``{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}``.
    """
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def gpu_node_selector(stack: Stack) -> dict[str, str]:
    """Return the node selector of the GPU model's product label (set by k8s_node and by GFD).

    The label is ``nvidia.com/gpu.product`` as NVIDIA GPU Feature Discovery sets it; the model is
    the first (sorted) model of the stack's PCI mappings, ``rtx-a4000`` when there is none.

    Args:
        stack: The validated stack.

    Returns:
        E.g. ``{"nvidia.com/gpu.product": "NVIDIA-RTX-A4000"}``.
    """
    models = {m.model for m in stack.config.pci_mappings} or {"rtx-a4000"}
    model = gpu_model(sorted(models)[0]) or {}
    return {GPU_PRODUCT_LABEL: str(model.get("product_label", "NVIDIA-RTX-A4000"))}


# ------------------------------------------------------------------------------ sizes


def worker_resources(stack: Stack) -> dict[str, Any]:
    """Return the CPU, memory and GPUs of one GPU worker pod.

    The smallest GPU worker VM minus the platform's system reserve (k3s, kubelet, DaemonSets), as
    :func:`skyrig.config.checks.gpu_workers_fit` validates; at least 1 core and 1024 MiB.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``{"cpu": cores (int), "memory_mib": MiB (int), "gpus": GPUs per worker (int)}``.
    """
    cfg = stack.config
    p, r = cfg.platform, cfg.ray
    sizes = []
    for vm in cfg.vms:
        if vm.gpus and "ray_worker" in vm.roles:
            cls = cfg.vm_classes[vm.vm_class]
            cores, mem, _ = effective(vm, cls)
            sizes.append((cores * cls.sockets, mem))
    cores = min(c for c, _ in sizes) if sizes else 1
    mem = min(m for _, m in sizes) if sizes else 4096
    return {"cpu": max(1, cores - p.system_reserve_cpu),
            "memory_mib": max(1024, mem - p.system_reserve_memory_mib),
            "gpus": r.gpus_per_worker}


def _res(cpu: int | str, memory_mib: int, gpus: int = 0) -> Obj:
    q: Obj = {"cpu": str(cpu), "memory": f"{memory_mib}Mi"}
    if gpus:
        q[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(q), "limits": dict(q)}


# ------------------------------------------------------------------------------ images


def ray_image(stack: Stack) -> str:
    """Return the Ray image of the stack: ``rayproject/ray:<ray>-<py>-cu<XY>``.

    Tag scheme of the ``rayproject/ray`` images on Docker Hub; Python and CUDA variant from the
    compatibility matrix (``ray_images``).

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        E.g. ``rayproject/ray:2.52.0-py311-cu128``.

    Raises:
        KeyError: The Ray version is not in the matrix (a validated stack never has that).
    """
    r, g = stack.config.ray, stack.config.gpu_stack
    info = matrix()["ray_images"][r.version]
    return f"rayproject/ray:{r.version}-{info['python']}-cu{g.cuda_version.replace('.', '')}"


def workload_image_tag(stack: Stack) -> str:
    """Return the immutable tag the Containerfile build produces: ``<workload version>-<variant>``.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``platform.image.tag`` when set, else e.g. ``0.1.0-cuda``.
    """
    img, w = stack.config.platform.image, stack.config.workload
    return img.tag or f"{w.version}-{img.variant}"


def workload_image(stack: Stack) -> str:
    """Return the RayJob's image reference.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``repository@sha256:...`` when a digest is pinned, else
        ``repository:<version>-<variant>``.
    """
    img = stack.config.platform.image
    if img.digest:
        return f"{img.repository}@{img.digest}"
    return f"{img.repository}:{workload_image_tag(stack)}"


# ------------------------------------------------------------------------------ platform


def namespaces(stack: Stack) -> list[Obj]:
    """Return the workload, operator and device-plugin namespaces with Pod Security labels.

    Workload and operator namespaces enforce, audit and warn at PSA ``restricted``; the
    device-plugin namespace is ``privileged`` (its DaemonSet mounts the kubelet's device-plugin
    directory). Kubernetes docs: "Pod Security Admission" labels.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        Three ``v1`` Namespace objects.
    """
    p = stack.config.platform
    out = []
    for name, level in ((p.operator_namespace, "restricted"), (p.namespace, "restricted"),
                        (DEVICE_PLUGIN_NAMESPACE, "privileged")):
        meta = _meta(name, stack, "namespace")
        meta["labels"].update({f"pod-security.kubernetes.io/{mode}": level
                               for mode in ("enforce", "audit", "warn")})
        meta["labels"]["pod-security.kubernetes.io/enforce-version"] = "latest"
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    return out


def device_plugin(stack: Stack) -> list[Obj]:
    """Return the NVIDIA device plugin (and GPU Feature Discovery when asked) DaemonSets.

    From the vendored NVIDIA k8s-device-plugin static manifests of
    ``platform.device_plugin_version``, on GPU nodes only (product-label selector), tolerating the
    GPU taint, with requests = limits of 50m CPU and 64 MiB.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        One or two ``apps/v1`` DaemonSet objects.

    Raises:
        SkyrigConfigError: That device-plugin release is not vendored.
    """
    p = stack.config.platform
    dp, gfd = device_plugin_manifests(p.device_plugin_version)
    dp["metadata"]["namespace"] = DEVICE_PLUGIN_NAMESPACE
    dp["metadata"]["labels"] = labels(stack, "device-plugin")
    spec = dp["spec"]["template"]["spec"]
    spec["nodeSelector"] = gpu_node_selector(stack)
    spec["tolerations"] = [gpu_toleration()]
    spec["containers"][0]["resources"] = _res("50m", 64)
    out = [dp]
    if p.gpu_feature_discovery:
        gfd["metadata"]["namespace"] = DEVICE_PLUGIN_NAMESPACE
        gfd["metadata"]["labels"] = {**gfd["metadata"]["labels"],
                                     **labels(stack, "gpu-feature-discovery")}
        gspec = gfd["spec"]["template"]["spec"]
        gspec["tolerations"] = [gpu_toleration()]
        gspec["containers"][0]["resources"] = _res("50m", 64)
        out.append(gfd)
    return out


def kuberay_operator(stack: Stack) -> list[Obj]:
    """Return the KubeRay operator install of ``ray.kuberay_version`` in the operator namespace.

    CRDs and install objects from the vendored kustomize render of KubeRay's
    ``ray-operator/config/default``; the operator Deployment gets 100m CPU and 512 MiB.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        CRDs, ServiceAccount, Roles and bindings, Service and Deployment (fresh copies).

    Raises:
        SkyrigConfigError: That KubeRay release is not vendored.
    """
    r, p = stack.config.ray, stack.config.platform
    ns = p.operator_namespace
    out = []
    for obj in kuberay_install(str(r.kuberay_version)):
        meta = obj["metadata"]
        meta.setdefault("labels", {}).update(labels(stack, "kuberay-operator"))
        if obj["kind"] != "CustomResourceDefinition" and "namespace" in meta:
            meta["namespace"] = ns
        for subject in obj.get("subjects", []):
            if "namespace" in subject:
                subject["namespace"] = ns
        if obj["kind"] == "Deployment":
            c = obj["spec"]["template"]["spec"]["containers"][0]
            c["resources"] = _res("100m", 512)
        out.append(obj)
    return out


def rbac(stack: Stack) -> list[Obj]:
    """Return least-privilege RBAC for the job submitter, in the workload namespace.

    Full access to RayJobs, read access to RayClusters, pods and pod logs it follows (Kubernetes
    RBAC docs), and a ``kubernetes.io/service-account-token`` Secret for CI/operators.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ServiceAccount, Role, RoleBinding and token Secret.
    """
    ns = stack.config.platform.namespace
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": _meta(SUBMITTER, stack, "rbac", ns), "automountServiceAccountToken": False}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(SUBMITTER, stack, "rbac", ns),
            "rules": [
                {"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                 "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": ["ray.io"], "resources": ["rayjobs/status"], "verbs": ["get"]},
                {"apiGroups": ["ray.io"], "resources": ["rayclusters"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods", "pods/log"],
                 "verbs": ["get", "list", "watch"]},
            ]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": _meta(SUBMITTER, stack, "rbac", ns),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": SUBMITTER},
               "subjects": [{"kind": "ServiceAccount", "name": SUBMITTER, "namespace": ns}]}
    token_meta = _meta(f"{SUBMITTER}-token", stack, "rbac", ns)
    token_meta["annotations"] = {"kubernetes.io/service-account.name": SUBMITTER}
    token = {"apiVersion": "v1", "kind": "Secret", "metadata": token_meta,
             "type": "kubernetes.io/service-account-token"}
    return [sa, role, binding, token]


def _ray_pods() -> Obj:
    return {"matchLabels": {"ray.io/is-ray-node": "yes"}}


def _ns_selector(name: str) -> Obj:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _ports(*ports: int, protocol: str = "TCP") -> list[Obj]:
    return [{"protocol": protocol, "port": p} for p in ports]


def tracking_uri(stack: Stack) -> str:
    """Return the MLflow URI the RayJob reports to: the in-cluster Service, or the external URI.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``http://mlflow.<namespace>.svc.cluster.local:<port>`` for ``mlflow.mode: in-cluster``,
        else ``workload.tracking_uri``.
    """
    p, w = stack.config.platform, stack.config.workload
    if p.mlflow.mode == "in-cluster":
        return f"http://{MLFLOW}.{p.namespace}.svc.cluster.local:{p.mlflow.port}"
    return str(w.tracking_uri)


def network_policies(stack: Stack) -> list[Obj]:
    """Return the workload namespace's NetworkPolicies: default deny, then only what Ray needs.

    Allowed: DNS to kube-dns, Ray pod to Ray pod, clients of the Ray head (submitter pods, the
    KubeRay operator), the metrics scrape from the monitoring namespace, the autoscaler to the API
    server (port 6443 of the control-plane VMs) and Ray to MLflow. Kubernetes NetworkPolicy
    semantics: policies are additive; a pod selected by any policy only gets what some policy
    allows.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``networking.k8s.io/v1`` NetworkPolicy objects.
    """
    cfg = stack.config
    p, r, k = cfg.platform, cfg.ray, cfg.kubernetes
    ns = p.namespace

    def pol(name: str, spec: Obj) -> Obj:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(name, stack, "network-policy", ns), "spec": spec}

    head = {"matchLabels": {"ray.io/node-type": "head"}}
    cps = sorted(str(vm.ip) for vm in cfg.vms if "kube_control_plane" in vm.roles)
    out = [
        pol("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        pol("allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": _ns_selector("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": _ports(53, protocol="UDP") + _ports(53)}]}),
        pol("ray-internal", {"podSelector": _ray_pods(), "policyTypes": ["Ingress", "Egress"],
                             "ingress": [{"from": [{"podSelector": _ray_pods()}]}],
                             "egress": [{"to": [{"podSelector": _ray_pods()}]}]}),
        pol("ray-head-clients", {
            "podSelector": head, "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": _ports(*HEAD_PORTS.values())},
                {"from": [{"namespaceSelector": _ns_selector(p.operator_namespace)}],
                 "ports": _ports(HEAD_PORTS["dashboard"], HEAD_PORTS["gcs"])},
            ]}),
        pol("submitter-to-ray-head", {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": head}], "ports": _ports(*HEAD_PORTS.values())}]}),
        pol("metrics-scrape", {
            "podSelector": _ray_pods(), "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": _ns_selector(cfg.monitoring.namespace)}],
                         "ports": _ports(r.metrics_export_port)}]}),
    ]
    if cps:
        out.append(pol("autoscaler-to-api-server", {
            "podSelector": head, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": f"{ip}/32"}} for ip in cps],
                        "ports": _ports(API_SERVER_PORT)}]}))
    if p.mlflow.mode == "in-cluster":
        mlflow_pods = {"matchLabels": {"app.kubernetes.io/name": MLFLOW}}
        out.append(pol("ray-to-mlflow", {
            "podSelector": _ray_pods(), "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": mlflow_pods}], "ports": _ports(p.mlflow.port)}]}))
        out.append(pol("mlflow-from-ray", {
            "podSelector": mlflow_pods, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": _ray_pods()}],
                         "ports": _ports(p.mlflow.port)}]}))
    else:
        uri = urlparse(tracking_uri(stack))
        port = uri.port or (443 if uri.scheme == "https" else 80)
        out.append(pol("ray-to-mlflow", {
            "podSelector": _ray_pods(), "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                            "except": [str(k.pod_cidr), str(k.service_cidr)]}}],
                        "ports": _ports(port)}]}))
    return out


def quotas(stack: Stack) -> list[Obj]:
    """Return the workload namespace's ResourceQuota and LimitRange.

    The quota leaves room for the standing RayCluster and one RayJob cluster at full size, the
    GPUs of the GPU worker VMs and MLflow (memory in MiB, ``Mi``); the LimitRange gives every
    container requests/limits, which a quota on ``requests.*``/``limits.*`` requires (Kubernetes
    docs: "Resource Quotas").

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``[ResourceQuota, LimitRange]``.
    """
    cfg = stack.config
    p, r = cfg.platform, cfg.ray
    ns = p.namespace
    w = worker_resources(stack)
    gpus = sum(len(vm.gpus) for vm in cfg.vms if vm.gpus and "ray_worker" in vm.roles)
    clusters = 2
    cpu = clusters * (p.head_cpu + 1 + r.gpu_workers_max * w["cpu"]) + 4
    mem = clusters * (p.head_memory_mib + 1024 + r.gpu_workers_max * w["memory_mib"]) + 8192
    hard = {"requests.cpu": str(cpu), "limits.cpu": str(cpu),
            "requests.memory": f"{mem}Mi", "limits.memory": f"{mem}Mi",
            f"requests.{GPU_RESOURCE}": str(gpus),
            "pods": str(clusters * (1 + r.gpu_workers_max) + 10),
            "persistentvolumeclaims": "5"}
    quota = {"apiVersion": "v1", "kind": "ResourceQuota",
             "metadata": _meta("skyrig-workloads", stack, "quota", ns), "spec": {"hard": hard}}
    limits = {"apiVersion": "v1", "kind": "LimitRange",
              "metadata": _meta("skyrig-defaults", stack, "quota", ns),
              "spec": {"limits": [{
                  "type": "Container",
                  "default": {"cpu": "500m", "memory": "512Mi"},
                  "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                  "max": {"cpu": str(max(w["cpu"], p.head_cpu)),
                          "memory": f"{max(w['memory_mib'], p.head_memory_mib)}Mi"}}]}}
    return [quota, limits]


# ------------------------------------------------------------------------------ Ray


def cluster_name(stack: Stack) -> str:
    """Return the name of the standing RayCluster.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``<stack>-ray``.
    """
    return f"{stack.name}-ray"


def _volumes(stack: Stack, *, data: bool) -> tuple[list[Obj], list[Obj]]:
    p, r = stack.config.platform, stack.config.ray
    vols: list[Obj] = [{"name": "dshm", "emptyDir": {
        "medium": "Memory", "sizeLimit": f"{r.object_store_memory_mib}Mi"}}]
    mounts: list[Obj] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if data:
        d = p.data
        if d.kind == "nfs":
            vols.append({"name": "data", "nfs": {"server": d.nfs_server, "path": d.nfs_path,
                                                 "readOnly": True}})
        else:
            vols.append({"name": "data", "persistentVolumeClaim": {
                "claimName": d.claim_name, "readOnly": True}})
        vols.append({"name": "results", "persistentVolumeClaim": {
            "claimName": p.results.claim_name}})
        mounts += [{"name": "data", "mountPath": d.mount_path, "readOnly": True},
                   {"name": "results", "mountPath": p.results.mount_path}]
    return vols, mounts


def ray_cluster_spec(stack: Stack, image: str, *, data: bool = True) -> Obj:
    """Return a ``RayCluster.spec`` (KubeRay ray.io/v1 API).

    Head on a CPU node (no ``nvidia.com/gpu.present`` label), ``num-cpus: 0``; one GPU worker
    group sized by :func:`worker_resources` (requests = limits), autoscaler on (idle timeout 600 s),
    metrics port exposed, object store ``ray.object_store_memory_mib`` (passed to Ray in bytes),
    ``/dev/shm`` as memory-backed ``emptyDir``; pods follow PSS ``restricted``.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).
        image: Container image of head and workers.
        data: Whether to mount the data (read-only) and results volumes.

    Returns:
        The spec dict, also used as a RayJob's ``rayClusterSpec``.
    """
    cfg = stack.config
    r, p = cfg.ray, cfg.platform
    w = worker_resources(stack)
    vols, mounts = _volumes(stack, data=data)
    metrics = {"name": "metrics", "containerPort": r.metrics_export_port}
    head_ports = [{"name": n, "containerPort": port} for n, port in HEAD_PORTS.items()]
    cpu_nodes = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]}}}
    head = {
        "serviceType": "ClusterIP",
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0",
                           "metrics-export-port": str(r.metrics_export_port)},
        "template": {"metadata": {"labels": labels(stack, "ray-head")}, "spec": {
            "securityContext": restricted_pod(),
            "affinity": cpu_nodes,
            "containers": [{
                "name": "ray-head", "image": image,
                "ports": [*head_ports, metrics],
                "resources": _res(p.head_cpu, p.head_memory_mib),
                "securityContext": restricted_container(),
                "volumeMounts": mounts}],
            "volumes": vols}}}
    worker = {
        "groupName": WORKER_GROUP,
        "replicas": r.gpu_workers_min, "minReplicas": r.gpu_workers_min,
        "maxReplicas": r.gpu_workers_max,
        "rayStartParams": {"num-gpus": str(w["gpus"]),
                           "object-store-memory": str(r.object_store_memory_mib * 1024 * 1024),
                           "metrics-export-port": str(r.metrics_export_port)},
        "template": {"metadata": {"labels": labels(stack, "ray-worker")}, "spec": {
            "securityContext": restricted_pod(),
            "nodeSelector": gpu_node_selector(stack),
            "tolerations": [gpu_toleration()],
            "containers": [{
                "name": "ray-worker", "image": image, "ports": [metrics],
                "resources": _res(w["cpu"], w["memory_mib"], w["gpus"]),
                "securityContext": restricted_container(),
                "volumeMounts": mounts}],
            "volumes": vols}}}
    return {
        "rayVersion": r.version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 600,
                              "resources": _res("500m", 512),
                              "securityContext": restricted_container()},
        "headGroupSpec": head,
        "workerGroupSpecs": [worker],
    }


def ray_cluster(stack: Stack) -> list[Obj]:
    """Return the standing RayCluster on the stack's Ray/CUDA image.

    Its head and worker PodMonitors come from :func:`skyrig.monitoring.kube_objects` (one scrape
    per Ray pod).

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        One ``ray.io/v1`` RayCluster object.
    """
    cfg = stack.config
    ns = cfg.platform.namespace
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": _meta(cluster_name(stack), stack, "ray-cluster", ns),
               "spec": ray_cluster_spec(stack, ray_image(stack))}
    return [cluster]


# ------------------------------------------------------------------------------ workload


def release_name(stack: Stack) -> str:
    """Return the RayJob name: workload, version and model alias (two releases never collide).

    At most 47 characters (KubeRay derives the RayCluster and submitter Job names from it).

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        E.g. ``qso-anomaly-v0-2-0-champion``.
    """
    w = stack.config.workload
    name = f"{w.name.replace('_', '-')}-v{w.version.replace('.', '-')}-{w.model_alias}"
    return name.lower()[:47].rstrip("-")


def entrypoint_args(stack: Stack) -> list[str]:
    """Return the arguments of ``python -m qso_anomaly.pipeline`` the stack implies.

    Parsed by the workload's own ``build_parser`` in the tests.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        Argument list: ``--out``, ``--tracking-uri``, ``--model-alias``, ``--n-spectra``,
        ``--seed``, ``--framework``, ``--expect-version``, ``--use-ray``, ``--num-workers`` and
        ``--use-gpu``/``--no-use-gpu``, ``--full-model``/``--no-full-model``
        (``workload.model_size``), then ``--data``/``--redshifts`` on the data volume
        for ``workload.input.kind: desi`` (:func:`skyrig.plan.workload.input_args`).
    """
    cfg = stack.config
    w, p, r = cfg.workload, cfg.platform, cfg.ray
    args = ["--out", f"{p.results.mount_path}/{release_name(stack)}",
            "--tracking-uri", tracking_uri(stack),
            "--model-alias", w.model_alias,
            "--n-spectra", str(w.n_spectra),
            "--seed", str(w.seed),
            "--framework", w.framework,
            "--expect-version", w.version,
            "--use-ray",
            "--num-workers", str(max(1, r.gpu_workers_max))]
    args.append("--use-gpu" if w.use_gpu else "--no-use-gpu")
    args.append("--full-model" if w.model_size == "full" else "--no-full-model")
    return args + input_args(stack, p.data.mount_path)


def entrypoint(stack: Stack) -> str:
    """Return the RayJob's shell-quoted entrypoint command line.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``python -m qso_anomaly.pipeline <args>`` (see :func:`entrypoint_args`).
    """
    return shlex.join(["python", "-m", "qso_anomaly.pipeline", *entrypoint_args(stack)])


def job_runtime_env(stack: Stack) -> str:
    """Return ``RayJob.spec.runtimeEnvYAML``.

    The scoring settings of ``skyrig:workload.scoring`` as the job's ``env_vars``
    (:func:`skyrig.plan.workload.scoring_env`), which Ray sets for the entrypoint driver and
    every actor of the job.
    """
    return yaml.safe_dump({"env_vars": scoring_env(stack)}, sort_keys=True,
                          default_flow_style=False)


def job_cluster_spec(stack: Stack, image: str) -> Obj:
    """Return the RayJob's own cluster.

    :func:`ray_cluster_spec`, with the GPU worker group started
    at (and kept at least at) the pods the scorer actors need
    (:func:`skyrig.plan.workload.scoring_gpu_workers`), so the request for
    ``num_gpus_per_actor x concurrency`` GPUs is there when scoring starts; checks.py has
    already refused a stack that asks for more than ``gpu_workers_max`` pods hold.
    """
    spec = ray_cluster_spec(stack, image)
    need = scoring_gpu_workers(stack)
    group = spec["workerGroupSpecs"][0]
    if need > group["minReplicas"]:
        group["minReplicas"] = group["replicas"] = min(need, group["maxReplicas"])
    return spec


def rayjob(stack: Stack) -> Obj:
    """Return one RayJob for the pinned workload release (KubeRay ray.io/v1 RayJob).

    Its own Ray cluster on the workload image, ``K8sJobMode`` submitter under the submitter
    ServiceAccount, shut down after the job, kept ``ttlSecondsAfterFinished`` seconds, retried
    ``backoffLimit`` times, stopped after ``activeDeadlineSeconds`` (``platform.job_deadline_s``);
    the scoring settings (``workload.scoring``) travel as ``QSO_SCORE_*`` in ``runtimeEnvYAML``.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        The RayJob object, labelled with workload, version and model alias.
    """
    cfg = stack.config
    p, w = cfg.platform, cfg.workload
    image = workload_image(stack)
    meta = _meta(release_name(stack), stack, "workload", p.namespace,
                 **{"skyrig.io/workload": w.name.replace("_", "-"),
                    "skyrig.io/workload-version": w.version,
                    "skyrig.io/model-alias": w.model_alias})
    submitter = {"spec": {
        "restartPolicy": "Never",
        "serviceAccountName": SUBMITTER,
        "securityContext": restricted_pod(),
        "containers": [{"name": "ray-job-submitter", "image": image,
                        "resources": _res("200m", 256),
                        "securityContext": restricted_container()}]}}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": {
        "entrypoint": entrypoint(stack),
        "runtimeEnvYAML": job_runtime_env(stack),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": p.job_ttl_seconds_after_finished,
        "backoffLimit": p.job_backoff_limit,
        "activeDeadlineSeconds": p.job_deadline_s,
        "submitterPodTemplate": submitter,
        "rayClusterSpec": job_cluster_spec(stack, image),
    }}


def volumes(stack: Stack) -> list[Obj]:
    """Return the data PVC (kind pvc; NFS needs no object) and the results PVC.

    Both ``ReadWriteMany`` (every Ray pod mounts them), sizes ``size_gib`` as ``<n>Gi``.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        One or two ``v1`` PersistentVolumeClaim objects.
    """
    p = stack.config.platform
    out = []

    def pvc(name: str, size_gib: int, storage_class: str | None, component: str) -> Obj:
        spec: Obj = {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": f"{size_gib}Gi"}}}
        if storage_class:
            spec["storageClassName"] = storage_class
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": _meta(name, stack, component, p.namespace), "spec": spec}

    if p.data.kind == "pvc" and p.data.claim_name:
        out.append(pvc(p.data.claim_name, p.data.size_gib, p.data.storage_class, "data"))
    out.append(pvc(p.results.claim_name, p.results.size_gib, p.results.storage_class, "results"))
    return out


def mlflow_server(stack: Stack) -> list[Obj]:
    """Return the in-cluster MLflow server when ``platform.mlflow.mode`` is ``in-cluster``.

    One replica (``Recreate``: SQLite store on a ``ReadWriteOnce`` PVC of ``storage_gib``
    GiB), ``--serve-artifacts`` (MLflow docs: tracking server artifact proxy), readiness on
    ``/health``, 1 CPU and 2048 MiB, PSS ``restricted``.

    Args:
        stack: The validated stack (dev/prod: Kubernetes on, ``ray.mode: kuberay``).

    Returns:
        ``[PVC, Deployment, Service]``, or ``[]`` for an external server.
    """
    p = stack.config.platform
    m = p.mlflow
    if m.mode != "in-cluster":
        return []
    ns = p.namespace
    sel = {"app.kubernetes.io/name": MLFLOW}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": _meta(f"{MLFLOW}-store", stack, "mlflow", ns),
           "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{m.storage_gib}Gi"}}}}
    cmd = ["mlflow", "server", "--host", "0.0.0.0", "--port", str(m.port),
           "--backend-store-uri", "sqlite:////mlflow/mlflow.db",
           "--artifacts-destination", "/mlflow/artifacts", "--serve-artifacts"]
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": _meta(MLFLOW, stack, "mlflow", ns),
           "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": sel},
                    "template": {"metadata": {"labels": {**sel, **labels(stack, "mlflow")}},
                                 "spec": {
                        "securityContext": restricted_pod(RAY_UID, RAY_UID),
                        "containers": [{
                            "name": MLFLOW, "image": m.image, "command": cmd,
                            "env": [{"name": "HOME", "value": "/mlflow"}],
                            "ports": [{"name": "http", "containerPort": m.port}],
                            "resources": _res(1, 2048),
                            "securityContext": restricted_container(),
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                               "periodSeconds": 10},
                            "volumeMounts": [{"name": "store", "mountPath": "/mlflow"}]}],
                        "volumes": [{"name": "store", "persistentVolumeClaim": {
                            "claimName": f"{MLFLOW}-store"}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(MLFLOW, stack, "mlflow", ns),
           "spec": {"selector": sel, "ports": [{"name": "http", "port": m.port,
                                                "targetPort": "http"}]}}
    return [pvc, dep, svc]
