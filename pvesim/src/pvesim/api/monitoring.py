"""What prometheus-pve-exporter reads, and the access endpoints that give it a read-only token.

Shapes and permissions follow PVE 8.4 (``pve-manager`` ``PVE/API2/Cluster.pm`` status,
``PVE/API2/ClusterConfig.pm`` qdevice, ``PVE/API2/BackupInfo.pm``, ``PVE/API2/LXC.pm``,
``PVE/API2/ReplicationConfig.pm``/``Replication.pm``, ``PVE/API2/Subscription.pm``;
``pve-access-control`` ``PVE/API2/User.pm`` (users, tokens) and ``PVE/API2/ACL.pm``):

* ``GET /cluster/status`` — one ``cluster`` entry (name, nodes, quorate, version) and one
  ``node`` entry per node (``id: node/<name>``, nodeid, ip, local, online, level); Sys.Audit /.
* ``GET /cluster/config/qdevice`` — ``{}`` (no QDevice); Sys.Audit on /.
* ``GET /cluster/backup-info/not-backed-up`` — every non-template VM (pvesim has no backup
  jobs); Sys.Audit on /.
* ``GET /nodes/{node}/lxc`` — ``[]`` (pvesim has no containers);
  ``GET /nodes/{node}/replication`` — ``[]``; ``.../replication/{id}/status`` — 500 no such job;
  ``GET /nodes/{node}/subscription`` — ``status: notfound`` like a node without a key.
* ``POST /access/users``, ``POST /access/users/{userid}/token/{tokenid}`` (returns
  ``full-tokenid``, ``info``, ``value``), ``PUT /access/acl`` (roles to users or tokens).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from pvesim.api import route
from pvesim.apierror import die, param_error
from pvesim.auth import BUILTIN_ROLES, Caller
from pvesim.backend import Backend

CLUSTER_NAME = "pvesim"


def _node_index(b: Backend) -> list[str]:
    return sorted(b.hw.nodes)


@route("GET", "/cluster/status")
def cluster_status(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    b.check_perm(caller, "/", ["Sys.Audit"])
    nodes = _node_index(b)
    with b.store.lock:
        down = set(b.data.get("nodes_offline", []))
    out: list[dict[str, Any]] = [{
        "type": "cluster", "id": "cluster", "name": CLUSTER_NAME, "nodes": len(nodes),
        "quorate": int(len(down) * 2 < len(nodes)), "version": len(nodes) + 1,
    }]
    for i, name in enumerate(nodes, start=1):
        out.append({
            "type": "node", "id": f"node/{name}", "name": name, "nodeid": i,
            "ip": f"127.0.0.{i + 1}", "local": int(i == 1), "online": int(name not in down),
            "level": "",
        })
    return out


@route("GET", "/cluster/config/qdevice")
def qdevice(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    b.check_perm(caller, "/", ["Sys.Audit"])
    return {}


@route("GET", "/cluster/backup-info/not-backed-up")
def not_backed_up(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    b.check_perm(caller, "/", ["Sys.Audit"])
    with b.store.lock:
        return [
            {"type": "qemu", "vmid": int(vmid), "name": vm["conf"].get("name", f"VM {vmid}")}
            for vmid, vm in sorted(b.data["vms"].items(), key=lambda kv: int(kv[0]))
            if vm["conf"].get("template") != "1"
        ]


@route("GET", "/nodes/{node}/lxc")
def lxc_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    b.node(p["node"])
    return []


@route("GET", "/nodes/{node}/replication")
def replication_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    b.node(p["node"])
    return []


@route("GET", "/nodes/{node}/replication/{id}/status")
def replication_status(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    b.node(p["node"])
    raise die(f"no such replication job '{p['id']}'\n")


@route("GET", "/nodes/{node}/subscription")
def subscription(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    node = b.node(p["node"])
    return {"status": "notfound", "message": "There is no subscription key",
            "serverid": uuid.uuid5(uuid.NAMESPACE_DNS, node.name).hex.upper(),
            "sockets": 1, "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"}


# ----------------------------------------------------------------------------- access


def _realm(userid: str) -> str:
    if "@" not in userid:
        raise param_error({"userid": "value does not look like a valid user name"})
    return userid.rsplit("@", 1)[1]


@route("POST", "/access/users")
def user_create(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    userid = str(p["userid"])
    b.check_perm(caller, f"/access/realm/{_realm(userid)}", ["Realm.AllocateUser"])
    b.check_perm(caller, "/access/groups", ["User.Modify"])
    with b.store.lock:
        users = b.data["users"]
        if userid in users:
            raise die(f"create user failed: user '{userid}' already exists\n")
        users[userid] = {"enable": int(p.get("enable", 1)), "tokens": {},
                         "password": str(p.get("password") or secrets.token_urlsafe(12))}
    b.store.commit()
    return None


@route("POST", "/access/users/{userid}/token/{tokenid}")
def token_create(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    userid, tokenid = str(p["userid"]), str(p["tokenid"])
    if caller.userid != userid:
        b.check_perm(caller, "/access/groups", ["User.Modify"])
    privsep = int(p.get("privsep", 1))
    secret = str(uuid.uuid4())
    with b.store.lock:
        user = b.data["users"].get(userid)
        if user is None:
            raise die(f"no such user ('{userid}')\n")
        tokens = user.setdefault("tokens", {})
        if tokenid in tokens:
            raise die("Token already exists.\n")
        tokens[tokenid] = {"secret": secret, "privsep": privsep}
    b.store.commit()
    info: dict[str, Any] = {"privsep": privsep}
    if "comment" in p:
        info["comment"] = str(p["comment"])
    return {"full-tokenid": f"{userid}!{tokenid}", "info": info, "value": secret}


@route("PUT", "/access/acl")
def acl_update(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    path = str(p["path"])
    b.check_perm(caller, path, ["Permissions.Modify"])
    roles = [r for r in str(p["roles"]).replace(";", ",").split(",") if r]
    targets = [("user", u) for u in str(p.get("users", "")).split(",") if u]
    targets += [("token", t) for t in str(p.get("tokens", "")).split(",") if t]
    if not targets:
        raise param_error({"users": "either 'users', 'groups' or 'tokens' is required"})
    delete = bool(int(p.get("delete", 0)))
    propagate = int(p.get("propagate", 1))
    with b.store.lock:
        data = b.data
        for role in roles:
            if role not in BUILTIN_ROLES and role not in data["roles"]:
                raise die(f"role '{role}' does not exist\n")
        for kind, ugid in targets:
            if kind == "user" and ugid not in data["users"]:
                raise die(f"user '{ugid}' does not exist\n")
            if kind == "token":
                uid, _, tid = ugid.partition("!")
                if tid not in data["users"].get(uid, {}).get("tokens", {}):
                    raise die(f"no such token '{tid}' for user '{uid}'\n")
            for role in roles:
                data["acl"] = [e for e in data["acl"] if not (
                    e["path"] == path and e["ugid"] == ugid and e["roleid"] == role)]
                if not delete:
                    data["acl"].append({"path": path, "ugid": ugid, "type": kind,
                                        "roleid": role, "propagate": propagate})
    b.store.commit()
    return None
