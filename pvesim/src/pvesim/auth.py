"""Users, API tokens, ACLs, roles, tickets and CSRF tokens (pve-access-control semantics)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

TICKET_LIFETIME = 7200
CSRF_MIN_AGE = -300

ALL_PRIVS: tuple[str, ...] = (
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
    "Datastore.Audit", "Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use",
    "Permissions.Modify", "Pool.Allocate", "Pool.Audit", "Realm.Allocate",
    "Realm.AllocateUser", "SDN.Allocate", "SDN.Audit", "SDN.Use", "Sys.AccessNetwork",
    "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
    "User.Modify", "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM",
    "VM.Config.CPU", "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType",
    "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.Migrate",
    "VM.Monitor", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
)

_VM_ALL = tuple(p for p in ALL_PRIVS if p.startswith("VM."))

#: Built-in roles of PVE 8.4 (the ones the covered endpoints can need).
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "Administrator": ALL_PRIVS,
    "NoAccess": (),
    "PVEAdmin": tuple(p for p in ALL_PRIVS if p not in (
        "Permissions.Modify", "Realm.Allocate", "Sys.Modify", "Sys.PowerMgmt",
        "Sys.Incoming", "Sys.AccessNetwork")),
    "PVEAuditor": ("Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit",
                   "VM.Audit"),
    "PVEVMAdmin": (*_VM_ALL, "Pool.Audit"),
    "PVEVMUser": ("VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit",
                  "VM.Console", "VM.PowerMgmt"),
    "PVETemplateUser": ("VM.Audit", "VM.Clone"),
    "PVEDatastoreUser": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "PVEDatastoreAdmin": ("Datastore.Allocate", "Datastore.AllocateSpace",
                          "Datastore.AllocateTemplate", "Datastore.Audit"),
    "PVEMappingUser": ("Mapping.Audit", "Mapping.Use"),
    "PVEMappingAdmin": ("Mapping.Audit", "Mapping.Modify", "Mapping.Use"),
    "PVESysAdmin": ("Sys.Audit", "Sys.Console", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
                    "Sys.Incoming", "Sys.AccessNetwork"),
    "PVESDNUser": ("SDN.Audit", "SDN.Use"),
}


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``userid`` (``user@realm``) and, for API tokens, ``tokenid``."""

    userid: str
    tokenid: str | None = None

    @property
    def authid(self) -> str:
        """The id PVE uses as "the user": ``user@realm!token`` for tokens."""
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid

    @property
    def is_token(self) -> bool:
        return self.tokenid is not None

    @property
    def is_root(self) -> bool:
        """``$authuser eq 'root@pam'``: true only for root@pam with a ticket, never a token."""
        return self.userid == "root@pam" and self.tokenid is None


def _b64(raw: bytes, pad: bool = True) -> str:
    text = base64.b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def make_ticket(secret: str, userid: str, now: float | None = None) -> str:
    stamp = f"{int(now if now is not None else time.time()):08X}"
    plain = f"PVE:{userid}:{stamp}"
    sig = hmac.new(secret.encode(), plain.encode(), hashlib.sha256).digest()
    return f"{plain}::{_b64(sig)}"


def verify_ticket(secret: str, ticket: str, now: float | None = None) -> str | None:
    """Return the userid of a valid, unexpired ticket, else None."""
    try:
        plain, sig = ticket.split("::", 1)
        prefix, userid, stamp = plain.split(":", 2)
        issued = int(stamp, 16)
    except ValueError:
        return None
    if prefix != "PVE" or len(stamp) != 8:
        return None
    good = _b64(hmac.new(secret.encode(), plain.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(good, sig):
        return None
    age = (now if now is not None else time.time()) - issued
    if age < CSRF_MIN_AGE or age > TICKET_LIFETIME:
        return None
    return userid


def make_csrf(secret: str, userid: str, now: float | None = None) -> str:
    stamp = f"{int(now if now is not None else time.time()):08X}"
    digest = hmac.new(secret.encode(), f"{stamp}:{userid}".encode(), hashlib.sha256).digest()
    return f"{stamp}:{_b64(digest, pad=False)}"


def verify_csrf(secret: str, token: str, userid: str, now: float | None = None) -> bool:
    try:
        stamp, _ = token.split(":", 1)
        issued = int(stamp, 16)
    except ValueError:
        return False
    digest = hmac.new(secret.encode(), f"{stamp}:{userid}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(f"{stamp}:{_b64(digest, pad=False)}", token):
        return False
    age = (now if now is not None else time.time()) - issued
    return CSRF_MIN_AGE <= age <= TICKET_LIFETIME


def role_privs(state: dict[str, Any], roleid: str) -> tuple[str, ...]:
    if roleid in BUILTIN_ROLES:
        return BUILTIN_ROLES[roleid]
    return tuple(state.get("roles", {}).get(roleid, ()))


def _path_chain(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def acl_privs(state: dict[str, Any], ugid: str, kind: str, path: str) -> set[str]:
    """Privileges granted to one user or token on ``path`` by the ACL tree (deepest wins)."""
    privs: set[str] = set()
    chain = _path_chain(path)
    acl = state.get("acl", [])
    for prefix in chain:
        entries = [
            e for e in acl
            if e["path"] == prefix and e["ugid"] == ugid and e["type"] == kind
            and (prefix == path or e.get("propagate", 1))
        ]
        if entries:
            privs = set()
            for e in entries:
                privs.update(role_privs(state, e["roleid"]))
    return privs


def effective_privs(state: dict[str, Any], caller: Caller, path: str) -> set[str]:
    """The privileges ``caller`` has on ``path`` (root@pam is superuser; privsep tokens are
    limited to the intersection of the user's and the token's ACLs)."""
    user = state.get("users", {}).get(caller.userid)
    if user is None:
        return set()
    if caller.userid == "root@pam":
        user_privs = set(ALL_PRIVS)
    else:
        user_privs = acl_privs(state, caller.userid, "user", path)
    if caller.tokenid is None:
        return user_privs
    token = user.get("tokens", {}).get(caller.tokenid)
    if token is None:
        return set()
    if not token.get("privsep", 1):
        return user_privs
    return user_privs & acl_privs(state, caller.authid, "token", path)


def has_priv(state: dict[str, Any], caller: Caller, path: str, privs: list[str] | tuple[str, ...],
             any_of: bool = False) -> bool:
    have = effective_privs(state, caller, path)
    if any_of:
        return any(p in have for p in privs)
    return all(p in have for p in privs)


def compute_cap(state: dict[str, Any], caller: Caller) -> dict[str, dict[str, int]]:
    """The ``cap`` object of a ticket answer (privileges on the top-level trees)."""
    groups = {
        "vms": ("/vms", "VM."), "storage": ("/storage", "Datastore."), "nodes": ("/nodes", "Sys."),
        "access": ("/access", "User."), "dc": ("/", "Sys."), "sdn": ("/sdn", "SDN."),
        "mapping": ("/mapping", "Mapping."),
    }
    out: dict[str, dict[str, int]] = {}
    for name, (path, prefix) in groups.items():
        have = effective_privs(state, caller, path)
        out[name] = {p: 1 for p in sorted(have) if p.startswith(prefix) or name == "dc"}
    return out
