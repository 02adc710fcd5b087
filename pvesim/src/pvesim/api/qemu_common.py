"""Shared pieces of the qemu endpoints: option permissions, pending apply/hot-plug, disks."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import TYPE_CHECKING, Any

from pvesim import vmconfig
from pvesim.apierror import die, param_error
from pvesim.auth import Caller
from pvesim.formats import FormatError, check_ssh_keys, urldecode_sshkeys

if TYPE_CHECKING:
    from pvesim.backend import Backend
    from pvesim.tasks import TaskContext

_CPU = {"cores", "sockets", "vcpus", "cpu", "cpulimit", "cpuunits", "numa", "affinity", "smp"}
_MEM = {"memory", "balloon", "shares"}
_HW = {"bios", "machine", "scsihw", "vga", "hotplug", "rng0", "audio0", "watchdog", "tpmstate0",
       "efidisk0", "ivshmem", "keyboard", "tablet", "acpi", "kvm", "arch", "spice_enhancements",
       "amd-sev", "hugepages", "keephugepages", "args"}
_CLOUDINIT = {"ciuser", "cipassword", "citype", "cicustom", "ciupgrade", "nameserver",
              "searchdomain", "sshkeys"}


def option_priv(key: str, value: str | None) -> str:
    """The ``VM.Config.*`` privilege a config option needs (qemu-server
    ``check_vm_modify_config_perm``)."""
    base = re.sub(r"\d+$", "", key)
    if key in _CPU or base == "numa":
        return "VM.Config.CPU"
    if key in _MEM:
        return "VM.Config.Memory"
    if base == "net":
        return "VM.Config.Network"
    if key in _CLOUDINIT or base == "ipconfig":
        return "VM.Config.Cloudinit"
    if vmconfig.is_drive(key) and key not in ("efidisk0", "tpmstate0"):
        if value is not None and vmconfig.is_cdrom(value):
            return "VM.Config.CDROM"
        return "VM.Config.Disk"
    if key in _HW or base in ("hostpci", "usb", "serial", "parallel", "virtiofs"):
        return "VM.Config.HWType"
    if base == "unused":
        return "VM.Config.Disk"
    return "VM.Config.Options"


def check_hostpci_perm(b: Backend, caller: Caller, vmid: int, key: str, value: str) -> None:
    """qemu-server ``check_hostpci_perm``: raw ``host=`` is root@pam (ticket) only."""
    try:
        opt = vmconfig.parse_option(key, value)
    except FormatError:
        return
    if opt.get("host"):
        if not caller.is_root:
            raise die(f"only root can set '{key}' config for non-mapped devices")
    elif opt.get("mapping"):
        b.check_perm(caller, f"/mapping/pci/{opt['mapping']}", ["Mapping.Use"])
        b.check_perm(caller, f"/vms/{vmid}", ["VM.Config.HWType"])
    else:
        raise die("either 'host' or 'mapping' must be set.")


def check_storage_access(b: Backend, caller: Caller, node: str, key: str, value: str) -> None:
    """Allocation (``STORAGE:SIZE``) needs ``Datastore.AllocateSpace`` and an images storage."""
    if not vmconfig.is_drive(key):
        return
    first = value.split(",", 1)[0]
    if "=" in first:
        m = re.search(r"(?:^|,)(?:file|volume)=([^,]+)", value)
        first = m.group(1) if m else ""
    m = vmconfig.DISK_ALLOC_RE.match(first) or vmconfig.CLOUDINIT_RE.match(first)
    if m:
        sid = m.group(1)
        st = b.storage(node, sid)
        b.check_perm(caller, f"/storage/{sid}", ["Datastore.AllocateSpace"])
        if "images" not in st.content:
            raise param_error({"storage": f"storage '{sid}' does not support vm images"})
    elif ":" in first and first not in ("none", "cdrom"):
        sid = first.split(":", 1)[0]
        st = b.storage(node, sid)
        if not caller.is_root:
            b.check_perm(caller, f"/storage/{sid}", ["Datastore.Audit", "Datastore.AllocateSpace"],
                         any_of=True)


def check_hookscript(b: Backend, node: str, volid: str) -> None:
    """pve-guest-common ``check_hookscript`` (reported as a 400 on ``hookscript``)."""
    sid, _, name = volid.partition(":")
    st = b.hw.nodes[node].storages.get(sid)
    if st is None:
        raise param_error({"hookscript": f"storage '{sid}' does not exist\n"})
    if not name.startswith("snippets/") or "snippets" not in st.content:
        raise param_error({"hookscript": f"'{volid}' is not in the snippets directory\n"})
    vol = b.volume(node, volid)
    if vol is None or vol.get("content") != "snippets":
        raise param_error({"hookscript": f"script '{volid}' does not exist\n"})
    if not vol.get("executable", 1):
        raise param_error({"hookscript": f"script '{volid}' is not executable\n"})


def hash_password(value: str) -> str:
    if value.startswith("$5$") or value.startswith("$6$"):
        return value
    salt = base64.b64encode(hashlib.sha1(value.encode() + str(time.time()).encode()).digest())[:16]
    digest = base64.b64encode(hashlib.sha256(salt + value.encode()).digest()).decode().rstrip("=")
    return f"$5${salt.decode().replace('+', '.')}${digest.replace('+', '.')}"


def prepare_options(b: Backend, caller: Caller, node: str, vmid: int,
                    opts: dict[str, Any], old: dict[str, str]) -> dict[str, str]:
    """Synchronous per-option work of create/update: privileges, sshkeys, MACs, passwords."""
    out: dict[str, str] = {}
    for key, raw in opts.items():
        value = str(raw)
        if key.startswith("hostpci"):
            check_hostpci_perm(b, caller, vmid, key, value)
            if key in old and old[key] != value:
                check_hostpci_perm(b, caller, vmid, key, old[key])
        elif key.startswith("usb") and re.search(r"(?:^|,)host=", value) and not caller.is_root:
            if "spice" not in value:
                raise die(f"only root can set '{key}' config for real devices")
        elif key.startswith("serial") and value.startswith("/dev/") and not caller.is_root:
            raise die(f"only root can set '{key}' config for real devices")
        b.check_perm(caller, f"/vms/{vmid}", [option_priv(key, value)])
        check_storage_access(b, caller, node, key, value)
        if key == "hookscript":
            check_hookscript(b, node, value)
        if key == "sshkeys":
            if not check_ssh_keys(urldecode_sshkeys(value)):
                raise die("SSH public key validation error")
        elif key == "cipassword":
            value = hash_password(value)
        elif key.startswith("net") and vmconfig.net_mac(value) is None:
            parsed = vmconfig.parse_option(key, value)
            model = parsed.pop("model", "virtio")
            parsed.pop("macaddr", None)
            rest = ",".join(f"{k}={v}" for k, v in sorted(parsed.items()))
            value = f"{model}={b.new_mac()}" + (f",{rest}" if rest else "")
        elif key == "vmgenid" and value == "1":
            value = b.new_uuid()
        out[key] = value
    return out


def _next_unused(conf: dict[str, str]) -> str:
    n = 0
    while f"unused{n}" in conf:
        n += 1
    return f"unused{n}"


def create_disk(b: Backend, node: str, vmid: int, key: str, value: str,
                ctx: TaskContext | None = None) -> str:
    """Allocate ``STORAGE:SIZE`` / ``STORAGE:cloudinit`` volumes; return the stored value."""
    first, _, rest = value.partition(",")
    m = vmconfig.DISK_ALLOC_RE.match(first)
    if m:
        sid = m.group(1)
        size_gib = float(m.group(2))
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        if "import-from" in opts:
            src = b.volume(node, opts.pop("import-from"))
            size = int(src["size"]) if src else int(size_gib * 1024**3)
        elif key == "efidisk0" or key == "tpmstate0":
            size = 4 * 1024**2
        else:
            size = int(size_gib * 1024**3)
        volid = b.alloc_volume(node, sid, vmid, size)
        if ctx is not None:
            ctx.log(f"  Logical volume \"{volid.split(':')[1]}\" created.")
        opts.pop("size", None)
        parts = [volid] + [f"{k}={v}" for k, v in sorted(opts.items())]
        parts.append(f"size={vmconfig.format_size(size)}")
        return ",".join(parts)
    m = vmconfig.CLOUDINIT_RE.match(first)
    if m:
        sid = m.group(1)
        name = f"vm-{vmid}-cloudinit"
        if b.volume(node, f"{sid}:{name}") is None:
            b.alloc_volume(node, sid, vmid, 4 * 1024**2, name=name)
        return f"{sid}:{name},media=cdrom"
    return value


def _drop_volume(b: Backend, node: str, conf: dict[str, str], key: str, old: str,
                 force: bool) -> None:
    volid = vmconfig.volume_of(old)
    if not volid or vmconfig.is_cdrom(old) or ":" not in volid:
        return
    if force:
        b.free_volume(node, volid)
    else:
        conf[_next_unused(conf)] = volid


def apply_pending(b: Backend, vm: dict[str, Any], vmid: int,
                  ctx: TaskContext | None = None) -> None:
    """``vmconfig_apply_pending``: move every pending change into the config (VM stopped)."""
    conf = vm["conf"]
    for key, force in sorted(vm.get("pending_delete", {}).items()):
        if key in conf:
            old = conf.pop(key)
            if vmconfig.is_drive(key):
                _drop_volume(b, vm["node"], conf, key, old, bool(force))
            elif key.startswith("unused"):
                # PVE's try_deallocate_drive: deleting unusedN destroys the volume
                b.free_volume(vm["node"], old)
    vm["pending_delete"] = {}
    for key, value in sorted(vm.get("pending", {}).items()):
        if vmconfig.is_drive(key):
            new = create_disk(b, vm["node"], vmid, key, value, ctx)
            old = conf.get(key)
            if old is not None and vmconfig.volume_of(old) != vmconfig.volume_of(new):
                _drop_volume(b, vm["node"], conf, key, old, False)
            conf[key] = new
        else:
            conf[key] = value
    vm["pending"] = {}


def _hotplug_features(conf: dict[str, str]) -> set[str]:
    raw = conf.get("hotplug", "network,disk,usb")
    if raw == "0":
        return set()
    if raw == "1":
        return {"network", "disk", "usb"}
    return set(raw.split(","))


def hotplug_pending(b: Backend, vm: dict[str, Any], vmid: int,
                    ctx: TaskContext | None = None) -> None:
    """``vmconfig_hotplug_pending``: apply what a running VM can take, keep the rest pending."""
    conf = vm["conf"]
    features = _hotplug_features(conf)

    def pluggable(key: str, value: str | None) -> bool:
        if vmconfig.is_fast_plug(key) or key.startswith("unused"):
            return True
        if key.startswith("net") and "network" in features:
            return True
        if vmconfig.is_drive(key) and key not in ("efidisk0", "tpmstate0"):
            if value is not None and vmconfig.is_cdrom(value):
                return True
            return "disk" in features
        if key in ("cores", "vcpus", "sockets") and "cpu" in features:
            return True
        return key == "memory" and "memory" in features

    for key, force in sorted(list(vm.get("pending_delete", {}).items())):
        if pluggable(key, conf.get(key)):
            old = conf.pop(key, None)
            if old is not None and vmconfig.is_drive(key):
                _drop_volume(b, vm["node"], conf, key, old, bool(force))
            elif old is not None and key.startswith("unused"):
                b.free_volume(vm["node"], old)  # destroyed at once, running or not
            del vm["pending_delete"][key]
    for key, value in sorted(list(vm.get("pending", {}).items())):
        if pluggable(key, value):
            conf[key] = create_disk(b, vm["node"], vmid, key, value, ctx) \
                if vmconfig.is_drive(key) else value
            del vm["pending"][key]
            if ctx is not None and not vmconfig.is_fast_plug(key):
                ctx.log(f"hotplug {key}: {conf[key]}")


def check_lock(conf: dict[str, str]) -> None:
    if "lock" in conf:
        raise die(f"VM is locked ({conf['lock']})")


def describe_update(vmid: int, opts: dict[str, str], deletes: list[str]) -> str:
    parts = []
    for key, value in sorted(opts.items()):
        parts.append(f"-{key} {'<hidden>' if key == 'cipassword' else value}")
    if deletes:
        parts.append(f"-delete {','.join(deletes)}")
    return f"update VM {vmid}: " + " ".join(parts)


def output_config(conf: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in conf.items():
        out[key] = "**********" if key == "cipassword" else vmconfig.typed(key, value)
    return out


def wait_for_task(b: Backend, upid: str, seconds: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with b.store.lock:
            task = b.data["tasks"].get(upid)
            if task and task["status"] == "stopped":
                return dict(task)
        time.sleep(0.02)
    return None

def _vmid(p: dict[str, Any]) -> int:
    return int(p["vmid"])
