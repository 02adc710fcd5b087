"""The Ansible variable contract (issue 16.3) and the inventory ↔ playbook contract (issue 17).

Every ``<role>_*`` variable the stack-derived inventory sets is declared in that role's
argument_specs and emitted on a group (or host) that a play running the role targets; every
argument_specs default equals defaults/main.yml; for every play, the hosts the stack says should
run it are targeted and have what the role's preflight requires."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from contract import (
    ONLY_GROUP,
    PLAYBOOKS,
    REPO,
    ROLES,
    ROLES_DIR,
    STACKS,
    ansible_inventory,
    argument_specs,
    plays,
    role_defaults,
    role_of,
)

from skyrig.config import load_stack
from skyrig.config.compat import gpu_model
from skyrig.config.loader import Stack
from skyrig.plan.inventory import build_inventory, ray_on_vms

pytestmark = pytest.mark.unit

TOKEN = {"k8s_node_token": "t" * 64}  # what skyrig.ansible.secrets passes as extra vars


def _stack(name: str) -> Stack:
    return load_stack(name, REPO)


def _vm_ray_stack() -> Stack:
    """prod with ray.mode vm and its first GPU guest as the Ray head."""
    st = _stack("prod")
    cfg = st.config
    vms = list(cfg.vms)
    i = next(i for i, vm in enumerate(vms) if "ray_worker" in vm.roles)
    vms[i] = vms[i].model_copy(update={"roles": ["kube_node", "ray_head"]})
    new = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"mode": "vm"}), "vms": vms})
    return Stack(name=st.name, config=new, source=st.source, root=st.root)


def _inventories() -> dict[str, Any]:
    out = {name: build_inventory(_stack(name)) for name in STACKS}
    out["prod-vm-ray"] = build_inventory(_vm_ray_stack())
    return out


INVENTORIES = _inventories()
STACK_IDS = sorted(INVENTORIES)


def _stack_for(sid: str) -> Stack:
    return _vm_ray_stack() if sid == "prod-vm-ray" else _stack(sid)


# ---------------------------------------------------------------- issue 16.3: variable contract


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_defaults_equal_defaults_main(role: str) -> None:
    specs, defaults = argument_specs(role), role_defaults(role)
    assert sorted(set(defaults) - set(specs)) == [], f"{role}: defaults not in argument_specs"
    for name, opt in specs.items():
        if opt.get("required"):
            assert name not in defaults, f"{role}: {name} is required but has a default"
            continue
        assert name in defaults, f"{role}: {name} declared but missing from defaults/main.yml"
        assert opt.get("default") == defaults[name], (
            f"{role}: {name}: argument_specs default {opt.get('default')!r} "
            f"!= defaults/main.yml {defaults[name]!r}"
        )


def _role_vars(inventory: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, name, var) for every variable the inventory sets: where is 'group'/'host'."""
    a = inventory["all"]
    out = [("group", "all", v) for v in a.get("vars", {})]
    out += [("host", h, v) for h, hv in a["hosts"].items() for v in hv]
    for g, body in a["children"].items():
        out += [("group", g, v) for v in body.get("vars", {})]
    return out


@pytest.mark.parametrize("sid", STACK_IDS)
def test_every_role_variable_is_declared_in_argument_specs(sid: str) -> None:
    undeclared = [
        (where, name, var)
        for where, name, var in _role_vars(INVENTORIES[sid])
        if (role := role_of(var)) is not None and var not in argument_specs(role)
    ]
    assert undeclared == []


@pytest.mark.parametrize("sid", STACK_IDS)
def test_all_vars_hold_no_role_variables(sid: str) -> None:
    all_vars = INVENTORIES[sid]["all"].get("vars", {})
    assert [v for v in all_vars if role_of(v)] == []
    assert all(v.startswith("skyrig_") for v in all_vars)


@pytest.mark.parametrize("sid", STACK_IDS)
def test_role_variables_sit_on_groups_that_run_the_role(sid: str, tmp_path: Path) -> None:
    """Kubespray's group_vars layout: a role's variables go to the hosts its plays target."""
    _, inv, _ = ansible_inventory(INVENTORIES[sid], tmp_path)
    runs: dict[str, set[str]] = {}
    for pb in PLAYBOOKS:
        for play in plays(pb):
            hosts = {h.name for h in inv.get_hosts(play.hosts)}
            for role, rv in play.roles:
                only = rv.get(ONLY_GROUP)
                if only is not None:
                    hosts_r = hosts & {h.name for h in inv.get_hosts(only)}
                else:
                    hosts_r = hosts
                runs.setdefault(role, set()).update(hosts_r)
    wrong = []
    for where, name, var in _role_vars(INVENTORIES[sid]):
        role = role_of(var)
        if role is None:
            continue
        targets = {name} if where == "host" else {h.name for h in inv.get_hosts(name)}
        if not targets <= runs.get(role, set()):
            wrong.append((where, name, var, sorted(targets - runs.get(role, set()))))
    assert wrong == []


def test_api_port_and_gpu_label_come_from_role_and_matrix() -> None:
    source = (REPO / "src" / "skyrig" / "plan" / "inventory.py").read_text()
    assert "6443" not in source and "NVIDIA-RTX-A4000" not in source and "rtx-a4000" not in source
    inv = INVENTORIES["prod"]["all"]
    url = inv["children"]["k8s_cluster"]["vars"]["k8s_node_server_url"]
    assert url.endswith(":{{ k8s_node_api_port }}")
    assert role_defaults("k8s_node")["k8s_node_api_port"] == 6443
    product = gpu_model("rtx-a4000")["product_label"]
    gpu_hosts = [h for h, hv in inv["hosts"].items() if hv.get("k8s_node_gpu")]
    assert gpu_hosts
    for h in gpu_hosts:
        assert inv["hosts"][h]["k8s_node_gpu_labels"]["nvidia.com/gpu.product"] == product


def _task_files(role: str) -> list[Path]:
    return sorted((ROLES_DIR / role).glob("tasks/*.yml")) + sorted(
        (ROLES_DIR / role).glob("handlers/*.yml")
    )


def _tags(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "tags":
                found += [v] if isinstance(v, str) else list(v)
            elif k == "apply" and isinstance(v, dict):
                found += _tags(v)
            else:
                found += _tags(v)
    elif isinstance(node, list):
        for item in node:
            found += _tags(item)
    return found


@pytest.mark.parametrize("role", ROLES)
def test_role_tags_are_prefixed_with_the_role_name(role: str) -> None:
    tags = {t for f in _task_files(role) for t in _tags(yaml.safe_load(f.read_text()))}
    assert tags, f"{role} has no tags"
    assert sorted(t for t in tags if t != role and not t.startswith(role + "_")) == []


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_variable_table_is_generated_from_argument_specs(role: str) -> None:
    from skyrig.ansible.role_docs import updated_readme

    readme = (ROLES_DIR / role / "README.md").read_text()
    assert readme == updated_readme(ROLES_DIR / role), (
        f"roles/{role}/README.md is stale: run .venv/bin/python -m skyrig.ansible.role_docs"
    )
    for name in argument_specs(role):
        assert f"| `{name}` |" in readme


# ------------------------------------------------- issue 17: inventory ↔ playbook contract


def _expected_hosts(stack: Stack, play_hosts: str) -> set[str] | None:
    """The hosts the stack says a play on ``play_hosts`` must reach (None: not a stack rule)."""
    cfg = stack.config
    vms = cfg.vms
    kube = cfg.kubernetes.enabled
    rules: dict[str, set[str]] = {
        "proxmox_gpu_hosts": {n.name for n in cfg.nodes if n.gpus},
        "gpu_guests": {vm.name for vm in vms if vm.gpus},
        "kube_control_plane": {vm.name for vm in vms if kube and "kube_control_plane" in vm.roles},
        "kube_node:!kube_control_plane": {
            vm.name for vm in vms
            if kube and "kube_node" in vm.roles and "kube_control_plane" not in vm.roles
        },
        "ray_head": {vm.name for vm in vms if ray_on_vms(cfg) and "ray_head" in vm.roles},
        "ray_worker": {vm.name for vm in vms if ray_on_vms(cfg) and "ray_worker" in vm.roles},
        "monitoring_targets": {n.name for n in cfg.nodes} | {vm.name for vm in vms},
    }
    if play_hosts == "gpu_guests:kube_node:!kube_control_plane":
        return rules["gpu_guests"] | rules["kube_node:!kube_control_plane"]
    return rules.get(play_hosts)


_REF = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _resolve(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _REF.sub(lambda m: str(variables.get(m.group(1), m.group(0))), value)
    return value


def _preflight_problems(role: str, host: str, v: dict[str, Any], first_server: str | None,
                        servers: dict[str, str]) -> list[str]:
    """What the role's preflight/argument_specs would refuse on ``host`` with variables ``v``."""
    problems = [
        f"{host}: {role} requires {name}"
        for name, opt in argument_specs(role).items()
        if opt.get("required") and name not in v
    ]
    if role == "proxmox_gpu_host" and not v.get("proxmox_gpu_host_pci_addresses"):
        problems.append(f"{host}: proxmox_gpu_host_pci_addresses is empty")
    if role == "k8s_node":
        init = bool(v.get("k8s_node_cluster_init"))
        if v["k8s_node_role"] == "agent" and init:
            problems.append(f"{host}: agent with cluster-init")
        if v["k8s_node_role"] == "server" and init != (host == first_server):
            problems.append(f"{host}: cluster-init must be set on the first server only")
        if v["k8s_node_role"] == "agent" or not init:
            url = _resolve(v.get("k8s_node_server_url", ""), v)
            if not re.match(r"^https://[^/]+:[0-9]+$", url):
                problems.append(f"{host}: k8s_node_server_url {url!r} is not https://host:port")
            elif first_server and url != f"https://{servers[first_server]}:{v['k8s_node_api_port']}":
                problems.append(f"{host}: joins {url}, not the first server")
            if not v.get("k8s_node_token"):
                problems.append(f"{host}: no k8s_node_token")
    if role == "ray_node" and v.get("ray_node_role") == "worker" and not v.get(
        "ray_node_head_address"
    ):
        problems.append(f"{host}: Ray worker without ray_node_head_address")
    return problems


@pytest.mark.parametrize("playbook", ["site", "upgrade"])
@pytest.mark.parametrize("sid", STACK_IDS)
def test_every_play_reaches_its_hosts_with_what_its_roles_need(
    sid: str, playbook: str, tmp_path: Path
) -> None:
    stack = _stack_for(sid)
    _, inv, vm = ansible_inventory(INVENTORIES[sid], tmp_path)
    servers = [h.name for h in inv.get_hosts("kube_control_plane")]
    addresses = {h: INVENTORIES[sid]["all"]["hosts"][h]["ansible_host"] for h in servers}
    first = servers[0] if servers else None
    problems: list[str] = []
    for play in plays(playbook):
        targeted = [h.name for h in inv.get_hosts(play.hosts)]
        expected = _expected_hosts(stack, play.hosts)
        if expected is not None and set(targeted) != expected:
            problems.append(
                f"{play.name}: targets {sorted(targeted)}, stack says {sorted(expected)}"
            )
        for role, role_vars in play.roles:
            only = role_vars.get(ONLY_GROUP)
            rv = {k: x for k, x in role_vars.items() if k != ONLY_GROUP}
            runs_on = targeted if only is None else [
                h for h in targeted if h in {x.name for x in inv.get_hosts(only)}
            ]
            for host in runs_on:
                hv = vm.get_vars(host=inv.get_host(host), include_hostvars=False)
                v = {**role_defaults(role), **dict(hv), **play.vars, **rv, **TOKEN}
                problems += _preflight_problems(role, host, v, first, addresses)
    assert problems == []


def test_k3s_servers_start_one_at_a_time_first_server_first() -> None:
    server_plays = [p for p in plays("site") if p.hosts == "kube_control_plane"]
    agent_plays = [p for p in plays("site") if p.hosts == "kube_node:!kube_control_plane"]
    assert [p.serial for p in server_plays] == [1]
    site = list(plays("site"))
    assert site.index(server_plays[0]) < site.index(agent_plays[0])


def test_gpu_less_proxmox_nodes_are_left_out_of_gpu_host_prep(tmp_path: Path) -> None:
    inv = INVENTORIES["prod"]
    _, im, _ = ansible_inventory(inv, tmp_path)
    for pb in ("host-prep", "site", "upgrade"):
        prep = [p for p in plays(pb) if ("proxmox_gpu_host", {}) in p.roles]
        assert prep, pb
        hosts = {h.name for p in prep for h in im.get_hosts(p.hosts)}
        assert hosts == {"pve04", "pve05", "pve06", "pve07"}, pb
    assert {h.name for h in im.get_hosts("proxmox_hosts")} == {f"pve0{i}" for i in range(1, 8)}
    assert "proxmox_gpu_host_pci_addresses" not in inv["all"]["hosts"]["pve01"]


@pytest.mark.parametrize("sid", ["local", "dev", "prod"])
def test_ray_groups_follow_the_one_ray_rule(sid: str) -> None:
    stack = _stack(sid)
    children = INVENTORIES[sid]["all"]["children"]
    assert stack.config.ray.mode != "vm" and not ray_on_vms(stack.config)
    assert children["ray_head"]["hosts"] == {} and children["ray_worker"]["hosts"] == {}
    assert INVENTORIES[sid]["all"]["vars"]["skyrig_ray_on_vms"] is False
    assert not any(v.startswith("ray_node_") for hv in INVENTORIES[sid]["all"]["hosts"].values()
                   for v in hv)


def test_vm_ray_mode_fills_ray_groups_with_a_head() -> None:
    inv = INVENTORIES["prod-vm-ray"]["all"]
    assert inv["vars"]["skyrig_ray_on_vms"] is True
    (head,) = inv["children"]["ray_head"]["hosts"]
    gpu_vms = [vm for vm in _stack("prod").config.vms if "ray_worker" in vm.roles]
    assert len(inv["children"]["ray_worker"]["hosts"]) == len(gpu_vms) - 1
    assert inv["children"]["ray_cluster"]["vars"]["ray_node_head_address"] == (
        f"{inv['hosts'][head]['ansible_host']}:6379"
    )


@pytest.mark.parametrize("playbook", ["ray", "upgrade", "site"])
def test_ray_plays_run_the_role_only_when_the_stack_runs_ray_on_vms(playbook: str) -> None:
    raw: list[dict[str, Any]] = []
    for name in {p.playbook for p in plays(playbook)}:
        raw += yaml.safe_load((REPO / "playbooks" / f"{name}.yml").read_text())
    ray_roles = [r for p in raw for r in p.get("roles") or [] if r.get("role") == "ray_node"]
    assert ray_roles
    assert all(r.get("when") == "skyrig_ray_on_vms | default(false) | bool" for r in ray_roles)


@pytest.mark.parametrize("sid", STACK_IDS)
def test_inventory_never_holds_the_k3s_token(sid: str) -> None:
    text = yaml.safe_dump(INVENTORIES[sid])
    assert "k8s_node_token" not in text and "token:" not in text


def test_driver_install_follows_the_pin_and_upgrade_reboots_one_guest_at_a_time() -> None:
    """17.5: apt installs the pinned version (state latest + the 1001 pin, so a new pin is an
    upgrade that reports changed); upgrade.yml reboots a guest whose driver changed, serially."""
    tasks = yaml.safe_load((ROLES_DIR / "nvidia_driver" / "tasks" / "install.yml").read_text())
    (install,) = [t for t in tasks if "ansible.builtin.apt" in t]
    apt = install["ansible.builtin.apt"]
    assert apt["state"] == "latest" and apt["allow_downgrade"] is True
    assert install["register"] == "_nvidia_driver_apt"
    assert role_defaults("nvidia_driver")["nvidia_driver_pin_priority"] > 1000  # pin wins
    (reboot,) = [t for t in tasks if "ansible.builtin.reboot" in t]
    assert "_nvidia_driver_apt is changed" in reboot["when"]
    assert "nvidia_driver_reboot_on_change" in reboot["when"]
    (guests,) = [p for p in plays("upgrade") if p.hosts.startswith("gpu_guests")]
    assert guests.serial == 1
    assert ("nvidia_driver", {"nvidia_driver_reboot_on_change": True,
                              ONLY_GROUP: "gpu_guests"}) in guests.roles
