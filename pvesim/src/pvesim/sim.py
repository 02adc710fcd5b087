"""``PveSim``: the embeddable simulator (HTTPS server in a background thread)."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from pvesim.apierror import PveSimError
from pvesim.auth import ALL_PRIVS, BUILTIN_ROLES
from pvesim.backend import ROOT_TOKEN_ID, Backend
from pvesim.faults import FaultInjector
from pvesim.server import PveHttpServer, serve_in_thread
from pvesim.tlsutil import ensure_tls, server_context


def tls_dir_for(state_path: Path) -> Path:
    """Where the CA and server certificate of a state file live (next to it)."""
    return state_path.parent / f"{state_path.name}.tls"


class PveSim:
    """A local Proxmox VE 8.4 API on ``https://127.0.0.1:PORT/api2/json``.

    >>> with PveSim(tmp / "state.json") as sim:          # doctest: +SKIP
    ...     prox = ProxmoxAPI("127.0.0.1", port=sim.port, user="root@pam",
    ...                       token_name="skyrig", token_value=sim.root_token[1],
    ...                       verify_ssl=str(sim.ca_path))
    """

    def __init__(
        self,
        state_path: Path,
        hardware: str | Path = "local",
        faults: Path | None = None,
        port: int = 0,
        task_durations: dict[str, float] | None = None,
        seed: int = 0,
        *,
        lock_timeout: float = 10.0,
        auth_failure_delay: float = 0.0,
    ) -> None:
        self.state_path = Path(state_path)
        self.host = "127.0.0.1"
        self._requested_port = port
        self.port = port
        injector = FaultInjector(seed)
        if faults is not None:
            injector.load_file(Path(faults))
        self.backend = Backend(self.state_path, hardware, faults=injector,
                               task_durations=task_durations, seed=seed,
                               lock_timeout=lock_timeout, auth_failure_delay=auth_failure_delay)
        self.tls = ensure_tls(tls_dir_for(self.state_path))
        self.ca_path: Path = self.tls.ca
        with self.backend.store.lock:
            self.backend.data["fingerprint"] = self.tls.fingerprint()
        self._server: PveHttpServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> PveSim:
        if self._server is not None:
            return self
        try:
            server = PveHttpServer((self.host, self._requested_port), self.backend,
                                   server_context(self.tls))
        except OSError as exc:
            raise PveSimError(f"pvesim cannot listen on {self.host}:{self._requested_port}: "
                              f"{exc.strerror or exc}",
                              hint="choose another --port or stop the process using it") from exc
        self._server = server
        self.port = server.server_address[1]
        serve_in_thread(server)
        return self

    def stop(self) -> None:
        """Stop serving. Tasks still running are abandoned (reported failed on next start)."""
        server, self._server = self._server, None
        self.backend.stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        self.backend.tasks.wait_all(timeout=5.0)

    def __enter__(self) -> PveSim:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ how to reach it
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/api2/json"

    @property
    def root_token(self) -> tuple[str, str]:
        user = self.backend.data["users"]["root@pam"]
        return f"root@pam!{ROOT_TOKEN_ID}", str(user["tokens"][ROOT_TOKEN_ID]["secret"])

    @property
    def root_password(self) -> str:
        return str(self.backend.data["users"]["root@pam"]["password"])

    @property
    def nodes(self) -> list[str]:
        return sorted(self.backend.hw.nodes)

    # ------------------------------------------------------------------ users, tokens, ACLs
    def add_user(self, userid: str, password: str | None = None) -> str:
        """Create (or update) a user; returns its password (generated when not given)."""
        if "@" not in userid:
            raise PveSimError(f"invalid userid '{userid}'", hint="use user@realm, e.g. ci@pve")
        password = password or secrets.token_urlsafe(12)
        with self.backend.store.lock:
            user = self.backend.data["users"].setdefault(userid, {"enable": 1, "tokens": {}})
            user["password"] = password
        self.backend.store.commit()
        return password

    def add_token(self, userid: str, tokenid: str, privsep: bool = True) -> str:
        """Create an API token ``userid!tokenid``; returns its secret."""
        secret = str(uuid.uuid4())
        with self.backend.store.lock:
            user = self.backend.data["users"].get(userid)
            if user is None:
                raise PveSimError(f"no such user '{userid}'", hint="call add_user() first")
            user.setdefault("tokens", {})[tokenid] = {"secret": secret, "privsep": int(privsep)}
        self.backend.store.commit()
        return secret

    def set_acl(self, path: str, roleid_or_privs: str | list[str] | tuple[str, ...], *,
                userid: str | None = None, tokenid: str | None = None,
                propagate: bool = True) -> None:
        """Grant a role (``PVEVMAdmin``) or a list of privileges on ``path`` to a user or token.

        ``tokenid`` is either ``user@realm!name`` or ``name`` together with ``userid``.
        """
        if tokenid is not None:
            ugid = tokenid if "!" in tokenid else f"{userid}!{tokenid}"
            kind = "token"
        elif userid is not None:
            ugid, kind = userid, "user"
        else:
            raise PveSimError("set_acl needs userid= or tokenid=")
        with self.backend.store.lock:
            data = self.backend.data
            if isinstance(roleid_or_privs, str) and (
                    roleid_or_privs in BUILTIN_ROLES or roleid_or_privs in data["roles"]):
                roleid = roleid_or_privs
            else:
                privs = [roleid_or_privs] if isinstance(roleid_or_privs, str) \
                    else list(roleid_or_privs)
                unknown = [p for p in privs if p not in ALL_PRIVS]
                if unknown:
                    raise PveSimError(f"unknown privilege(s) or role {unknown}",
                                      hint="use a PVE role name or privileges like VM.Allocate")
                roleid = "skyrig-" + "-".join(sorted(privs)).replace(".", "_")
                data["roles"][roleid] = sorted(privs)
            data["acl"] = [e for e in data["acl"] if not (
                e["path"] == path and e["ugid"] == ugid and e["roleid"] == roleid)]
            data["acl"].append({"path": path, "ugid": ugid, "type": kind, "roleid": roleid,
                                "propagate": int(propagate)})
        self.backend.store.commit()

    def bootstrap_token(self, userid: str, tokenid: str,
                        acl: dict[str, list[str] | tuple[str, ...]]) -> str:
        """Create (once) ``userid`` and its privilege-separated token ``userid!tokenid`` and
        give both exactly the privileges in ``acl`` (path → privileges, propagated), replacing
        any other grants they had. Idempotent: an existing token keeps its secret. Returns the
        token's secret. This is the one thing root is used for on a local stack."""
        authid = f"{userid}!{tokenid}"
        with self.backend.store.lock:
            exists = userid in self.backend.data["users"]
        if not exists:
            self.add_user(userid)
        with self.backend.store.lock:
            user = self.backend.data["users"][userid]
            token = user.setdefault("tokens", {}).get(tokenid)
            if token is None:
                token = user["tokens"][tokenid] = {"secret": str(uuid.uuid4()), "privsep": 1}
            token["privsep"] = 1
            secret = str(token["secret"])
            data = self.backend.data
            data["acl"] = [e for e in data["acl"] if e["ugid"] not in (userid, authid)]
        self.backend.store.commit()
        for path, privs in acl.items():
            self.set_acl(path, list(privs), userid=userid)
            self.set_acl(path, list(privs), tokenid=authid)  # privsep: token ∩ user
        return secret

    def add_snippet(self, node: str, storage: str, name: str, size: int = 1024,
                    executable: bool = True) -> str:
        """Put a snippet file (e.g. a hookscript or cloud-init user-data) on a storage with
        ``snippets`` content, as an operator would over SSH; returns its volid."""
        with self.backend.store.lock:
            st = self.backend.storage(node, storage)
            if "snippets" not in st.content:
                raise PveSimError(f"storage '{storage}' on {node} has no 'snippets' content")
            self.backend._volumes(node, storage)[f"snippets/{name}"] = {
                "size": size, "format": "snippet", "ctime": int(time.time()), "content": "snippets",
                "executable": int(executable)}
        self.backend.store.commit()
        return f"{storage}:snippets/{name}"

    # ------------------------------------------------------------------ testing helpers
    def set_faults(self, spec: dict[str, Any] | None) -> None:
        self.backend.faults.configure(spec)

    def set_node_online(self, node: str, online: bool = True) -> list[str]:
        """Take ``node`` offline (``online=False``) or back; returns the offline nodes.

        Over HTTP: ``PUT /_pvesim/nodes/<node>/online`` (outside ``/api2/json``) with
        ``{"online": false}`` (root@pam). See :meth:`pvesim.backend.Backend.set_node_online`.
        """
        return self.backend.set_node_online(node, online)

    def request_counts(self) -> dict[tuple[str, str], int]:
        """API calls so far per (method, schema path template)."""
        return self.backend.request_counts()

    def reset_request_counts(self) -> None:
        self.backend.reset_request_counts()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no task is running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.backend.store.lock:
                if not any(t["status"] == "running" for t in self.backend.data["tasks"].values()):
                    return
            time.sleep(0.02)
        raise PveSimError(f"pvesim tasks still running after {timeout} s")

    def vm(self, vmid: int) -> dict[str, Any] | None:
        """A copy of one VM's raw state (node, conf, pending, status), for assertions."""
        import copy

        with self.backend.store.lock:
            vm = self.backend.data["vms"].get(str(vmid))
            return copy.deepcopy(vm) if vm is not None else None
