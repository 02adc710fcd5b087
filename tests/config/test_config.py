"""Stack validation: shipped stacks pass; each broken stack fails with file, line and key path."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from skyrig.config import load_stack
from skyrig.errors import SkyrigConfigError

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.width = 200
    return y


def _load(name: str) -> Any:
    return _yaml().load((ROOT / "stacks" / f"Pulumi.{name}.yaml").read_text())


def _write(doc: Any, tmp_path: Path, name: str) -> Path:
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    f = tmp_path / "stacks" / f"Pulumi.{name}.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(buf.getvalue())
    return f


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
def test_shipped_stacks_validate(name: str) -> None:
    stack = load_stack(name, ROOT)
    assert stack.name == name
    assert stack.config.environment == name
    for vm in stack.config.vms:
        if vm.gpus:
            cls = stack.config.vm_classes[vm.vm_class]
            assert (cls.machine, cls.bios, cls.cpu, cls.balloon_mib) == ("q35", "ovmf", "host", 0)


def test_prod_models_the_lab() -> None:
    c = load_stack("prod", ROOT).config
    assert len(c.nodes) == 7
    gpu_nodes = [n for n in c.nodes if n.gpus]
    assert len(gpu_nodes) == 4 and all(len(n.gpus) == 2 for n in gpu_nodes)
    assert {g.model for n in gpu_nodes for g in n.gpus} == {"rtx-a4000"}
    assert sum(1 for vm in c.vms if "kube_control_plane" in vm.roles) == 3
    assert sum(1 for vm in c.vms if vm.gpus) == 8
    assert c.ray.mode == "kuberay" and c.workload.model_alias == "champion"
    text = (ROOT / "stacks" / "Pulumi.prod.yaml").read_text()
    assert not re.search(r"(secret|password)[ \t]*:[ \t]*[^\s{]", text), "plain-text secret in prod"


Mutation = Callable[[Any], None]


def _set(path: list[Any], value: Any) -> Mutation:
    def apply(doc: Any) -> None:
        node = doc["config"]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return apply


def _delete(path: list[Any]) -> Mutation:
    def apply(doc: Any) -> None:
        node = doc["config"]
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]

    return apply


def _append_vm(**overrides: Any) -> Mutation:
    def apply(doc: Any) -> None:
        vms = doc["config"]["skyrig:vms"]
        vm = copy.deepcopy(dict(vms[0]))
        vm.update(overrides)
        vms.append(vm)

    return apply


def _both(*ms: Mutation) -> Mutation:
    def apply(doc: Any) -> None:
        for m in ms:
            m(doc)

    return apply


V = "skyrig:vms"
C = "skyrig:vm_classes"
# (id, base stack, mutation, expected key path (prefix), expected message fragment)
BROKEN: list[tuple[str, str, Mutation, str, str]] = [
    ("dup-vmid", "prod", _set([V, 1, "vmid"], 201), "skyrig:vms[1].vmid", "duplicate vmid"),
    ("dup-name", "prod", _set([V, 1, "name"], "k8s-cp-01"), "skyrig:vms[1].name", "duplicate name"),
    ("dup-ip", "prod", _set([V, 1, "ip"], "10.42.10.21"), "skyrig:vms[1].ip", "duplicate ip"),
    ("ip-outside", "prod", _set([V, 0, "ip"], "10.43.0.5"), "skyrig:vms[0].ip", "outside"),
    ("ip-is-gateway", "prod", _set([V, 0, "ip"], "10.42.10.1"), "skyrig:vms[0].ip", "gateway"),
    ("bad-ip", "prod", _set([V, 0, "ip"], "10.42.10.300"), "skyrig:vms[0].ip", "IPv4"),
    (
        "gateway-outside",
        "prod",
        _set(["skyrig:network", "gateway"], "10.9.9.1"),
        "skyrig:network.gateway",
        "outside",
    ),
    (
        "unknown-mapping",
        "prod",
        _set([V, 3, "gpus"], ["a4000-nope"]),
        "skyrig:vms[3].gpus[0]",
        "not defined",
    ),
    (
        "mapping-wrong-node",
        "prod",
        _set([V, 3, "gpus"], ["a4000-pve05-a"]),
        "skyrig:vms[3].gpus[0]",
        "no entry there",
    ),
    (
        "gpu-twice",
        "prod",
        _set([V, 4, "gpus"], ["a4000-pve04-a"]),
        "skyrig:vms[4].gpus[0]",
        "already assigned",
    ),
    ("too-much-memory", "prod", _set([V, 3, "memory_mib"], 600000), "skyrig:vms", "MiB"),
    ("too-many-cores", "prod", _set([V, 3, "cores"], 128), "skyrig:vms[3].cores", "vCPUs"),
    (
        "machine-pc",
        "prod",
        _set([C, "gpu-worker", "machine"], "pc"),
        "skyrig:vm_classes.gpu-worker.machine",
        "machine",
    ),
    (
        "bios-seabios",
        "prod",
        _set([C, "gpu-worker", "bios"], "seabios"),
        "skyrig:vm_classes.gpu-worker.bios",
        "ovmf",
    ),
    (
        "no-efi",
        "prod",
        _set([C, "gpu-worker", "efi_disk"], False),
        "skyrig:vm_classes.gpu-worker.efi_disk",
        "EFI",
    ),
    (
        "cpu-kvm64",
        "prod",
        _set([C, "gpu-worker", "cpu"], "kvm64"),
        "skyrig:vm_classes.gpu-worker.cpu",
        "cpu: host",
    ),
    (
        "balloon-on",
        "prod",
        _set([C, "gpu-worker", "balloon_mib"], 4096),
        "skyrig:vm_classes.gpu-worker.balloon_mib",
        "ballooning",
    ),
    (
        "pcie-without-q35",
        "prod",
        _set([C, "gpu-worker", "machine"], "pc"),
        "skyrig:vm_classes.gpu-worker.pcie",
        "q35",
    ),
    (
        "old-driver",
        "prod",
        _set(["skyrig:gpu_stack", "driver_version"], "550.54"),
        "skyrig:gpu_stack.driver_version",
        "older than CUDA",
    ),
    (
        "unknown-cuda",
        "prod",
        _set(["skyrig:gpu_stack", "cuda_version"], "11.0"),
        "skyrig:gpu_stack.cuda_version",
        "not supported",
    ),
    (
        "kuberay-k8s",
        "prod",
        _set(["skyrig:kubernetes", "version"], "v1.28.3+k3s1"),
        "skyrig:kubernetes.version",
        "KubeRay",
    ),
    (
        "ray-kuberay",
        "prod",
        _both(
            _set(["skyrig:ray", "version"], "2.60.0"),
            _set(["skyrig:ray", "kuberay_version"], "1.6.0"),
        ),
        "skyrig:ray.kuberay_version",
        "does not support Ray",
    ),
    (
        "torch-version",
        "prod",
        _set(["skyrig:workload", "torch_version"], "1.13.0"),
        "skyrig:workload.torch_version",
        "not supported",
    ),
    (
        "workload-version",
        "prod",
        _set(["skyrig:workload", "version"], "9.9.9"),
        "skyrig:workload.version",
        "not a released version",
    ),
    (
        "plain-secret",
        "prod",
        _set(["skyrig:proxmox", "token_secret"], "hunter2"),
        "skyrig:proxmox.token_secret",
        "plain-text secret",
    ),
    ("unknown-key", "prod", _set(["skyrig:vmz"], []), "skyrig:vmz", "unknown skyrig key"),
    (
        "unknown-nested-key",
        "prod",
        _set([V, 0, "colour"], "blue"),
        "skyrig:vms[0].colour",
        "unknown key",
    ),
    ("missing-required", "prod", _delete(["skyrig:gpu_stack"]), "skyrig:gpu_stack", "missing"),
    (
        "bad-pci-path",
        "prod",
        _set(["skyrig:nodes", 3, "gpus", 0, "path"], "01:00.0"),
        "skyrig:nodes[3].gpus[0].path",
        "PCI card address",
    ),
    (
        "mapping-no-gpu",
        "prod",
        _set(["skyrig:pci_mappings", 0, "entries", 0, "path"], "0000:02:00"),
        "skyrig:pci_mappings[0].entries[0].path",
        "has no GPU",
    ),
    (
        "vm-unknown-node",
        "prod",
        _set([V, 0, "node"], "pve99"),
        "skyrig:vms[0].node",
        "not in skyrig:nodes",
    ),
    (
        "vm-unknown-class",
        "prod",
        _set([V, 0, "class"], "huge"),
        "skyrig:vms[0].class",
        "unknown class",
    ),
    (
        "http-endpoint",
        "prod",
        _set(["skyrig:proxmox", "endpoint"], "http://pve01:8006"),
        "skyrig:proxmox.endpoint",
        "https",
    ),
    (
        "prod-no-tls",
        "prod",
        _set(["skyrig:proxmox", "verify_tls"], False),
        "skyrig:proxmox.verify_tls",
        "TLS",
    ),
    (
        "even-control-plane",
        "prod",
        _set([V, 2, "roles"], ["kube_node"]),
        "skyrig:kubernetes.enabled",
        "odd",
    ),
    (
        "kube-role-without-k8s",
        "local",
        _set([V, 0, "roles"], ["kube_node"]),
        "skyrig:vms[0].roles[0]",
        "kubernetes.enabled is false",
    ),
    (
        "local-not-pvesim",
        "local",
        _set(["skyrig:proxmox", "endpoint"], "https://pve1:8006"),
        "skyrig:proxmox.endpoint",
        "pvesim",
    ),
    ("vmid-is-template", "local", _set([V, 0, "vmid"], 9002), "skyrig:vms[0].vmid", "template"),
    (
        "reboot-policy",
        "local",
        _set(["skyrig:proxmox", "reboot_policy"], "always"),
        "skyrig:proxmox.reboot_policy",
        "never",
    ),
    ("vmid-type", "local", _set([V, 0, "vmid"], "three hundred"), "skyrig:vms[0].vmid", "integer"),
    (
        "gpu-on-no-iommu",
        "local",
        _set(["skyrig:nodes", 0, "iommu"], False),
        "skyrig:nodes[0].iommu",
        "IOMMU",
    ),
    (
        "extra-vm-same-gpu",
        "local",
        _append_vm(name="gpu-w-3", vmid=303, ip="127.0.10.33"),
        "skyrig:vms[2].gpus[0]",
        "already assigned",
    ),
    (
        "environment",
        "local",
        _set(["skyrig:environment"], "staging"),
        "skyrig:environment",
        "local",
    ),
    (
        "ray-ports",
        "local",
        _set(["skyrig:ray", "dashboard_port"], 26379),
        "skyrig:ray.dashboard_port",
        "used twice",
    ),
    (
        "ray-derived-port",
        "local",
        _set(["skyrig:ray", "metrics_export_port"], 26380),
        "skyrig:ray.metrics_export_port",
        "head_port",
    ),
    (
        "ssh-key",
        "prod",
        _set(["skyrig:cloud_init", "ssh_keys"], ["not a key"]),
        "skyrig:cloud_init.ssh_keys",
        "SSH public key",
    ),
]


@pytest.mark.parametrize(
    ("case", "base", "mutate", "path", "fragment"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_broken_stack_reports_file_line_and_path(
    tmp_path: Path, case: str, base: str, mutate: Mutation, path: str, fragment: str
) -> None:
    doc = _load(base)
    mutate(doc)
    f = _write(doc, tmp_path, base)
    with pytest.raises(SkyrigConfigError) as info:
        load_stack(f, ROOT)
    issues = info.value.issues
    hits = [
        i
        for i in issues
        if i.path.startswith(path) and fragment.lower() in (i.message + " " + i.hint).lower()
    ]
    assert hits, f"{case}: expected {path!r} ~ {fragment!r}; got:\n{info.value}"
    for issue in issues:
        assert issue.file == str(f)
        assert issue.line is not None and issue.line > 0
        assert issue.path.startswith("skyrig:")


def test_line_points_at_the_key(tmp_path: Path) -> None:
    doc = _load("prod")
    _set([V, 1, "vmid"], 201)(doc)
    f = _write(doc, tmp_path, "prod")
    with pytest.raises(SkyrigConfigError) as info:
        load_stack(f, ROOT)
    issue = next(i for i in info.value.issues if i.path == "skyrig:vms[1].vmid")
    assert issue.line is not None
    assert f.read_text().splitlines()[issue.line - 1].strip() == "vmid: 201"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    doc = _load("prod")
    _both(
        _set([V, 1, "vmid"], 201),
        _set([V, 0, "ip"], "10.43.0.5"),
        _set(["skyrig:gpu_stack", "cuda_version"], "11.0"),
        _set(["skyrig:ray", "head_port"], "x"),
    )(doc)
    f = _write(doc, tmp_path, "prod")
    with pytest.raises(SkyrigConfigError) as info:
        load_stack(f, ROOT)
    paths = {i.path for i in info.value.issues}
    assert {
        "skyrig:vms[1].vmid",
        "skyrig:vms[0].ip",
        "skyrig:gpu_stack.cuda_version",
        "skyrig:ray.head_port",
    } <= paths


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("config: [1, 2\n", "not valid YAML"),
        ("just: text\n", "top-level `config:`"),
        ("config:\n  skyrig:environment: local\n", "missing"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "Pulumi.x.yaml"
    f.write_text(text)
    with pytest.raises(SkyrigConfigError) as info:
        load_stack(f, ROOT)
    assert fragment in str(info.value)
    assert all(i.file == str(f) for i in info.value.issues)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SkyrigConfigError, match="stack file not found"):
        load_stack(tmp_path / "Pulumi.nope.yaml", ROOT)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] or [path]
    return [path]


PROD_LEAVES = _leaves(dict(_load("prod")["config"]))
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["0000:01:00", "10.42.10.77", "q35", "host", "v1.33.4+k3s1", "pvesim", ""]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(leaf=st.sampled_from(PROD_LEAVES), value=values)
def test_fuzzed_values_never_crash(tmp_path: Path, leaf: tuple[Any, ...], value: Any) -> None:
    doc = _load("prod")
    _set(list(leaf), value)(doc)
    f = _write(doc, tmp_path, "prod")
    try:
        load_stack(f, ROOT)
    except SkyrigConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == str(f) and issue.path.startswith("skyrig:")
            assert issue.line is not None
