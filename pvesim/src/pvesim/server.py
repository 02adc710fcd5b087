"""The HTTPS front end: PVE's wire protocol (envelope, reason phrases, auth, keep-alive)."""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pvesim.api import HANDLERS, Reply, load_all
from pvesim.apierror import ApiError, PveSimError, param_error, perm_error
from pvesim.auth import Caller, has_priv, verify_csrf, verify_ticket
from pvesim.backend import Backend
from pvesim.schema import endpoint_info, match_route
from pvesim.validation import validate_params

MAX_BODY = 512 * 1024
SERVER_HEADER = "pve-api-daemon/3.0"


class DropConnection(Exception):
    """Fault injection: close the connection without an answer."""


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    if key in target:
        cur = target[key]
        target[key] = (cur if isinstance(cur, list) else [cur]) + [value]
    else:
        target[key] = value


def parse_params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        _merge(params, key, value)
    if body:
        if content_type.split(";")[0].strip().lower() == "application/json":
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise ApiError(400, f"unable to parse JSON body: {exc}") from exc
            if not isinstance(data, dict):
                raise ApiError(400, "JSON body must be an object")
            for key, value in data.items():
                params[key] = value
        else:
            for key, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                     keep_blank_values=True):
                _merge(params, key, value)
    return params


def _check(b: Backend, caller: Caller, check: list[Any], params: dict[str, Any],
           noerr: bool) -> bool:
    op = check[0]
    if op == "perm":
        path = re.sub(r"\{([^}]+)\}", lambda m: str(params.get(m.group(1), "")), check[1])
        privs = list(check[2])
        opts = dict(zip(check[3::2], check[4::2], strict=False))
        if "require_param" in opts and opts["require_param"] not in params:
            if noerr:
                return False
            raise perm_error()
        any_of = bool(opts.get("any"))
        if has_priv(b.data, caller, path, privs, any_of):
            return True
        if noerr:
            return False
        b.check_perm(caller, path, privs, any_of)
        return False
    if op == "and":
        return all(_check(b, caller, sub, params, noerr) for sub in check[1:])
    if op == "or":
        if any(_check(b, caller, sub, params, True) for sub in check[1:]):
            return True
        if noerr:
            return False
        raise perm_error()
    return True  # userid-param / userid-group: not used by the covered endpoints


class PveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    timeout = 60
    server: PveHttpServer

    def version_string(self) -> str:
        return SERVER_HEADER

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _send(self, code: int, reason: str, payload: dict[str, Any] | bytes | None) -> None:
        if isinstance(payload, bytes):
            body = payload
        else:
            body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        reason = reason.encode("latin-1", "replace").decode("latin-1")
        if "\r" in reason or "\n" in reason:
            code, reason = 400, "Bad Request"
        close = code >= 400
        head = (
            f"{self.protocol_version} {code} {reason}\r\n"
            f"Server: {SERVER_HEADER}\r\n"
            f"Date: {self.date_time_string()}\r\n"
            "Content-Type: application/json;charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: max-age=0\r\n"
            "Pragma: no-cache\r\n"
            f"Expires: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Connection: {'close' if close else 'Keep-Alive'}\r\n\r\n"
        )
        # one write: separate header and body writes meet Nagle + delayed ACK (~40 ms stalls)
        self.wfile.write(head.encode("latin-1") + body)
        if close:
            self.close_connection = True

    def _handle(self, method: str) -> None:
        started = time.monotonic()
        b = self.server.backend
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ApiError(413, "Request Entity Too Large")
            body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            if url.path.startswith("/_pvesim/"):
                result = self._admin(method, url.path, url.query, body)
                self._send(200, "OK", {"data": result})
                return
            m = re.match(r"^/api2/([^/]+)(/.*)?$", url.path)
            if not m or m.group(1) != "json":
                raise ApiError(501, "no such uri")
            api_path = "/".join(urllib.parse.unquote(s) for s in (m.group(2) or "/").split("/"))
            api_path = api_path.rstrip("/") or "/"
            payload = self._dispatch(method, api_path, url.query, body)
            self._send(200, "OK", payload)
        except DropConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except ApiError as exc:
            if exc.status == 401 and b.auth_failure_delay > 0:
                left = b.auth_failure_delay - (time.monotonic() - started)
                if left > 0:
                    time.sleep(left)
            self._send(exc.status, exc.reason, exc.body())
        except Exception as exc:
            import traceback

            traceback.print_exc()
            err = ApiError(500, f"pvesim internal error: {exc}")
            self._send(500, err.reason, err.body())

    # ------------------------------------------------------------------ authentication
    def _authenticate(self, method: str) -> Caller:
        b = self.server.backend
        auth = self.headers.get("Authorization", "")
        state = b.data
        if auth.startswith("PVEAPIToken"):
            value = auth[len("PVEAPIToken"):].lstrip("= ")
            m = re.match(r"^([^!\s]+)!([^=\s]+)[=:](.+)$", value)
            if not m:
                raise ApiError(401, "no tokenid specified", empty_body=True)
            userid, tokenid, secret = m.group(1), m.group(2), m.group(3).strip()
            user = state["users"].get(userid)
            if user is None or not user.get("enable", 1):
                raise ApiError(401, f"no such user ('{userid}')", empty_body=True)
            token = user.get("tokens", {}).get(tokenid)
            if token is None:
                raise ApiError(401, f"no such token '{tokenid}' for user '{userid}'",
                               empty_body=True)
            if token.get("expire") and token["expire"] < time.time():
                raise ApiError(401, f"token '{tokenid}' access expired", empty_body=True)
            if token.get("secret") != secret:
                raise ApiError(401, "invalid token value!", empty_body=True)
            return Caller(userid, tokenid)
        ticket = None
        cookie = self.headers.get("Cookie", "")
        m = re.search(r"(?:^|;\s*)PVEAuthCookie=([^;]*)", cookie)
        if m:
            ticket = urllib.parse.unquote(m.group(1))
        elif auth.startswith("PVEAuthCookie="):
            ticket = urllib.parse.unquote(auth[len("PVEAuthCookie="):])
        if not ticket:
            raise ApiError(401, "No ticket", empty_body=True)
        userid = verify_ticket(state["secret"], ticket)
        if userid is None or userid not in state["users"]:
            raise ApiError(401, "permission denied - invalid PVE ticket", empty_body=True)
        if method != "GET":
            csrf = self.headers.get("CSRFPreventionToken", "")
            if not verify_csrf(state["secret"], csrf, userid):
                raise ApiError(401, "Permission denied - invalid csrf token", empty_body=True)
        return Caller(userid)

    # ------------------------------------------------------------------ PVE request processing
    def _dispatch(self, method: str, api_path: str, query: str,
                  body: bytes) -> dict[str, Any] | bytes:
        b = self.server.backend
        route = match_route(api_path)
        info = endpoint_info(route.template, method) if route else None
        b.count_request(method, route.template if route else api_path)
        world = bool(info) and info.get("permissions", {}).get("user") == "world"  # type: ignore[union-attr]
        caller: Caller | None = None
        try:
            caller = self._authenticate(method)
        except ApiError:
            if not world:
                raise
        if method in ("GET", "DELETE") and body:
            raise ApiError(501, f"Unexpected content for method '{method}'")
        handler = HANDLERS.get((method, route.template)) if route else None
        if route is None or info is None or handler is None:
            raise ApiError(501, f"Method '{method} {api_path}' not implemented")
        fault = b.faults.request_fault(method, route.template, api_path, route.params)
        if fault is not None:
            if fault.latency:
                time.sleep(fault.latency)
            if fault.drop:
                raise DropConnection()
            if fault.error is not None:
                raise fault.error
        params = parse_params(query, body, self.headers.get("Content-Type", ""))
        dups = {k: "duplicate parameter (already defined in URI)" for k in route.params
                if k in params}
        if dups:
            raise param_error(dups)
        params.update(route.params)
        if caller is not None and caller.is_token and not info.get("allowtoken", 1):
            raise ApiError(403, f"URI '{api_path}' not available with API token, need proper "
                                "ticket.")
        if caller is not None:
            check = info.get("permissions", {}).get("check")
            if check:
                with b.store.lock:
                    _check(b, caller, check, params, noerr=False)
        if info.get("proxyto") == "node" and "node" in params:
            b.node(str(params["node"]))
            if b.node_offline(str(params["node"])):
                raise ApiError(595, "No route to host")  # pveproxy cannot reach the node
        props = info.get("parameters", {}).get("properties", {})
        validated = validate_params(props, params)
        result = handler(b, caller or Caller("nobody@pve"), validated)
        if isinstance(result, Reply):
            if result.raw is not None:
                return result.raw
            return {"data": result.data, **result.extra}
        return {"data": result}

    # ------------------------------------------------------------------ admin (not PVE)
    def _admin(self, method: str, path: str, query: str, body: bytes) -> Any:
        b = self.server.backend
        caller = self._authenticate("GET")
        if caller.userid != "root@pam":
            raise perm_error("/_pvesim, root@pam only")
        if path == "/_pvesim/faults":
            if method == "GET":
                return b.faults.spec()
            if method in ("PUT", "POST"):
                spec = json.loads(body or b"{}")
                b.faults.configure(spec)
                return b.faults.spec()
        if path.startswith("/_pvesim/nodes/") and path.endswith("/online") \
                and method in ("PUT", "POST"):
            node = path.removeprefix("/_pvesim/nodes/").removesuffix("/online")
            try:
                spec = json.loads(body or b"{}")
            except ValueError:
                spec = None
            want = spec.get("online") if isinstance(spec, dict) else None
            if not isinstance(want, bool):
                raise param_error({"online": 'give a JSON body {"online": false} or'
                                             ' {"online": true}'})
            try:
                return {"offline": b.set_node_online(node, want)}
            except PveSimError as exc:
                raise ApiError(400, str(exc)) from exc
        if path == "/_pvesim/request-counts":
            if method == "DELETE":
                b.reset_request_counts()
                return None
            return [{"method": m, "path": p, "count": n}
                    for (m, p), n in sorted(b.request_counts().items())]
        raise ApiError(501, f"Method '{method} {path}' not implemented")


class PveHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], backend: Backend,
                 context: ssl.SSLContext) -> None:
        self.backend = backend
        self.ssl_context = context
        load_all()
        super().__init__(address, PveHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(10)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # broken client connections are not errors of the simulator


def serve_in_thread(server: PveHttpServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="pvesim-http", daemon=True)
    thread.start()
    return thread
