"""/access/ticket: tickets and CSRF tokens."""

from __future__ import annotations

import hmac
from typing import Any

from pvesim.api import route
from pvesim.apierror import ApiError
from pvesim.auth import Caller, compute_cap, make_csrf, make_ticket, verify_ticket
from pvesim.backend import Backend


@route("GET", "/access/ticket")
def ticket_index(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    return None


@route("POST", "/access/ticket")
def create_ticket(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    username = str(p["username"])
    if "@" not in username and p.get("realm"):
        username = f"{username}@{p['realm']}"
    password = str(p["password"])
    secret = b.data["secret"]
    user = b.data["users"].get(username)
    ok = False
    if user is not None and user.get("enable", 1):
        if password.startswith("PVE:"):
            ok = verify_ticket(secret, password) == username
        elif user.get("password") is not None:
            ok = hmac.compare_digest(str(user["password"]), password)
    if not ok:
        raise ApiError(401, "authentication failure")
    who = Caller(username)
    if p.get("path") and p.get("privs"):
        privs = [x for x in str(p["privs"]).replace(";", ",").split(",") if x]
        b.check_perm(who, str(p["path"]), privs)
        return {"username": username}
    return {
        "username": username,
        "ticket": make_ticket(secret, username),
        "CSRFPreventionToken": make_csrf(secret, username),
        "cap": compute_cap(b.data, who),
    }
