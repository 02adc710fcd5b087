"""/nodes/{node}/tasks: list, status and log."""

from __future__ import annotations

from typing import Any

from pvesim.api import Reply, route
from pvesim.apierror import param_error
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.tasks import is_error_status, upid_decode

_STATUS_KEYS = ("upid", "node", "pid", "pstart", "starttime", "type", "id", "user")


def _task(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    upid = str(p["upid"])
    if upid_decode(upid) is None:
        raise param_error({"upid": "unable to parse worker upid"})
    task = b.data["tasks"].get(upid)
    if task is None:
        raise param_error({"upid": "no such task"})
    owner = task["user"]
    if owner != caller.authid and owner.split("!")[0] != caller.authid:
        b.check_perm(caller, f"/nodes/{p['node']}", ["Sys.Audit"])
    return task  # type: ignore[no-any-return]


@route("GET", "/nodes/{node}/tasks/{upid}")
def task_index(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, str]]:
    with b.store.lock:
        _task(b, caller, p)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    with b.store.lock:
        task = _task(b, caller, p)
        out = {k: task[k] for k in _STATUS_KEYS}
        out["status"] = task["status"]
        if task["status"] == "stopped":
            out["exitstatus"] = task["exitstatus"]
    return out


@route("GET", "/nodes/{node}/tasks/{upid}/log")
def task_log(b: Backend, caller: Caller, p: dict[str, Any]) -> Reply:
    start = int(p.get("start", 0))
    limit = int(p.get("limit", 50))
    with b.store.lock:
        task = _task(b, caller, p)
        lines = list(task["log"])
    if not lines and task["status"] == "running":
        lines = []
    if p.get("download"):
        return Reply("\n".join(lines) + "\n")
    chosen = lines[start:start + limit] if limit else lines[start:]
    data = [{"n": start + i + 1, "t": t} for i, t in enumerate(chosen)]
    if not data and start == 0:
        data = [{"n": 1, "t": "no content"}] if task["status"] == "stopped" else []
    return Reply(data, {"total": len(lines)})


@route("GET", "/nodes/{node}/tasks")
def task_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    node = b.node(p["node"]).name
    source = p.get("source", "archive")
    start = int(p.get("start", 0))
    limit = int(p.get("limit", 50))
    statuses = {s for s in str(p.get("statusfilter", "")).split(",") if s}
    audit = b.can(caller, f"/nodes/{node}", ["Sys.Audit"])
    out = []
    with b.store.lock:
        tasks = list(b.data["tasks"].values())
    for task in reversed(tasks):
        if task["node"] != node:
            continue
        running = task["status"] == "running"
        if (source == "archive" and running) or (source == "active" and not running):
            continue
        if not audit and task["user"].split("!")[0] != caller.userid:
            continue
        if "vmid" in p and task["id"] != str(p["vmid"]):
            continue
        if p.get("typefilter") and task["type"] != p["typefilter"]:
            continue
        if p.get("userfilter") and p["userfilter"] not in task["user"]:
            continue
        if p.get("since") and task["starttime"] < int(p["since"]):
            continue
        if p.get("until") and task["starttime"] > int(p["until"]):
            continue
        status = task.get("exitstatus")
        if p.get("errors") and (status is None or not is_error_status(status)):
            continue
        if statuses:
            kind = "ok" if status == "OK" else "warning" if status and status.startswith(
                "WARNINGS") else "error" if status else "running"
            if kind not in statuses:
                continue
        entry = {k: task[k] for k in _STATUS_KEYS}
        if not running:
            entry["endtime"] = task.get("endtime")
            entry["status"] = status
        out.append(entry)
    return out[start:start + limit] if limit else out[start:]
