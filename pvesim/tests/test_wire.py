"""Wire protocol: envelope, headers, reason phrases, auth layer, keep-alive, body formats."""

from __future__ import annotations

import json
import time

import pytest
import requests

from pvesim import PveSim
from pvesim.testing import proxmox_client

from .conftest import raises


def _get(sim: PveSim, path: str, **kw: object) -> requests.Response:
    return requests.get(sim.url + path, verify=str(sim.ca_path), timeout=10, **kw)  # type: ignore[arg-type]


def _token_header(sim: PveSim) -> dict[str, str]:
    tid, secret = sim.root_token
    return {"Authorization": f"PVEAPIToken={tid}={secret}"}


@pytest.mark.integration
def test_success_envelope_and_headers(sim: PveSim) -> None:
    resp = _get(sim, "/version", headers=_token_header(sim))
    assert resp.status_code == 200
    assert resp.headers["Server"] == "pve-api-daemon/3.0"
    assert resp.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert resp.headers["Cache-Control"] == "max-age=0"
    assert resp.headers["Pragma"] == "no-cache"
    assert "Expires" in resp.headers
    assert resp.headers["Connection"].lower() == "keep-alive"
    assert resp.json() == {"data": {"version": "8.4.1", "release": "8.4",
                                    "repoid": "2a5fa54a8503f96d"}}


@pytest.mark.integration
def test_tls_certificate_is_issued_by_the_written_ca(sim: PveSim) -> None:
    assert sim.ca_path.is_file()
    assert sim.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(sim.url + "/version", timeout=5, verify=True)


@pytest.mark.integration
def test_no_ticket_is_401_with_empty_body_and_closes(sim: PveSim) -> None:
    resp = _get(sim, "/nodes")
    assert resp.status_code == 401
    assert resp.reason == "No ticket"
    assert resp.content == b""
    assert resp.headers["Connection"] == "close"


@pytest.mark.integration
def test_invalid_ticket_and_bad_token(sim: PveSim) -> None:
    resp = _get(sim, "/nodes", cookies={"PVEAuthCookie": "PVE:root@pam:00000000::bad"})
    assert (resp.status_code, resp.reason) == (401, "permission denied - invalid PVE ticket")
    resp = _get(sim, "/nodes", headers={"Authorization": "PVEAPIToken=root@pam!skyrig=nope"})
    assert (resp.status_code, resp.reason) == (401, "invalid token value!")
    resp = _get(sim, "/nodes", headers={"Authorization": "PVEAPIToken=root@pam!other=x"})
    assert resp.reason == "no such token 'other' for user 'root@pam'"


@pytest.mark.integration
def test_unknown_path_is_501_after_auth(sim: PveSim) -> None:
    assert _get(sim, "/nodes/pve1/foo").status_code == 401
    resp = _get(sim, "/nodes/pve1/foo", headers=_token_header(sim))
    assert resp.status_code == 501
    assert resp.reason == "Method 'GET /nodes/pve1/foo' not implemented"
    assert resp.json()["data"] is None
    resp = requests.get(f"https://127.0.0.1:{sim.port}/api2/extjs/version",
                        verify=str(sim.ca_path), timeout=10)
    assert (resp.status_code, resp.reason) == (501, "no such uri")


@pytest.mark.integration
def test_error_body_has_message_and_errors(sim: PveSim) -> None:
    resp = requests.put(sim.url + "/nodes/pve1/qemu/9001/config", data={"onboot": "True"},
                        headers=_token_header(sim), verify=str(sim.ca_path), timeout=10)
    assert resp.status_code == 400
    assert resp.reason == "Parameter verification failed."
    assert resp.json() == {"data": None,
                           "errors": {"onboot": "type check ('boolean') failed - got 'True'"},
                           "message": "Parameter verification failed.\n"}
    assert resp.headers["Connection"] == "close"


@pytest.mark.integration
def test_ticket_login_csrf_and_renewal(sim: PveSim) -> None:
    resp = requests.post(sim.url + "/access/ticket",
                         data={"username": "root@pam", "password": sim.root_password},
                         verify=str(sim.ca_path), timeout=10)
    data = resp.json()["data"]
    assert data["username"] == "root@pam"
    assert data["ticket"].startswith("PVE:root@pam:")
    head, sig = data["ticket"].split("::")
    assert len(head.split(":")[2]) == 8 and sig
    cookie = {"PVEAuthCookie": data["ticket"]}
    # writes without the CSRF token are refused
    resp = requests.put(sim.url + "/nodes/pve1/qemu/9001/config", data={"description": "x"},
                        cookies=cookie, verify=str(sim.ca_path), timeout=10)
    assert (resp.status_code, resp.reason) == (401, "Permission denied - invalid csrf token")
    resp = requests.put(sim.url + "/nodes/pve1/qemu/9001/config", data={"description": "x"},
                        cookies=cookie,
                        headers={"CSRFPreventionToken": data["CSRFPreventionToken"]},
                        verify=str(sim.ca_path), timeout=10)
    assert resp.status_code == 200 and resp.json() == {"data": None}
    # renewal: the ticket as password
    resp = requests.post(sim.url + "/access/ticket",
                         data={"username": "root@pam", "password": data["ticket"]},
                         verify=str(sim.ca_path), timeout=10)
    assert resp.json()["data"]["ticket"].startswith("PVE:root@pam:")


@pytest.mark.integration
def test_bad_login_is_401_json(sim: PveSim) -> None:
    resp = requests.post(sim.url + "/access/ticket", data={"username": "root@pam",
                                                           "password": "wrong"},
                         verify=str(sim.ca_path), timeout=10)
    assert (resp.status_code, resp.reason) == (401, "authentication failure")
    assert resp.json() == {"data": None, "message": "authentication failure\n"}


@pytest.mark.integration
def test_ticket_endpoint_refuses_tokens(sim: PveSim) -> None:
    resp = requests.post(sim.url + "/access/ticket", data={"username": "root@pam",
                                                           "password": sim.root_password},
                         headers=_token_header(sim), verify=str(sim.ca_path), timeout=10)
    assert resp.status_code == 403
    assert resp.reason == ("URI '/access/ticket' not available with API token, need proper "
                           "ticket.")


@pytest.mark.integration
def test_json_body_and_repeated_keys(sim: PveSim) -> None:
    hdr = _token_header(sim)
    body = {"id": "gpu0", "map": ["node=pve1,path=0000:01:00,id=10de:24b0",
                                  "node=pve2,path=0000:01:00,id=10de:24b0"]}
    resp = requests.post(sim.url + "/cluster/mapping/pci", json=body, headers=hdr,
                         verify=str(sim.ca_path), timeout=10)
    assert resp.status_code == 200, resp.reason
    resp = requests.post(sim.url + "/cluster/mapping/pci", headers=hdr, verify=str(sim.ca_path),
                         data=[("id", "gpu1"), ("map", "node=pve1,path=0000:01:00,id=10de:24b0"),
                               ("map", "node=pve2,path=0000:01:00,id=10de:24b0")], timeout=10)
    assert resp.status_code == 200, resp.reason
    maps = _get(sim, "/cluster/mapping/pci", headers=hdr).json()["data"]
    assert [len(m["map"]) for m in maps] == [2, 2]
    resp = requests.put(sim.url + "/nodes/pve1/qemu/9001/config", json={"onboot": True},
                        headers=hdr, verify=str(sim.ca_path), timeout=10)
    assert resp.status_code == 200


@pytest.mark.integration
def test_body_on_get_and_duplicate_uri_parameter(sim: PveSim) -> None:
    hdr = _token_header(sim)
    resp = requests.get(sim.url + "/version", data="x=1", headers=hdr, verify=str(sim.ca_path),
                        timeout=10)
    assert (resp.status_code, resp.reason) == (501, "Unexpected content for method 'GET'")
    resp = _get(sim, "/nodes/pve1/qemu/9001/config?vmid=9001", headers=hdr)
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"vmid": "duplicate parameter (already defined in URI)"}


@pytest.mark.integration
def test_keep_alive_reuses_connection(sim: PveSim) -> None:
    with requests.Session() as s:
        s.headers.update(_token_header(sim))
        for _ in range(3):
            # verify= per request: REQUESTS_CA_BUNDLE would override Session.verify
            resp = s.get(sim.url + "/version", timeout=10, verify=str(sim.ca_path))
            assert resp.status_code == 200
        pool = next(iter(s.adapters["https://"].poolmanager.pools._container.values()))
        assert pool.num_connections == 1


@pytest.mark.integration
def test_auth_failure_delay_is_configurable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with PveSim(tmp_path / "s.json", auth_failure_delay=0.3) as sim:
        t0 = time.monotonic()
        assert _get(sim, "/nodes").status_code == 401
        assert time.monotonic() - t0 >= 0.29


@pytest.mark.integration
def test_proxmoxer_password_and_token_clients(sim: PveSim) -> None:
    by_ticket = proxmox_client(sim, password=("root@pam", sim.root_password))
    by_token = proxmox_client(sim)
    assert [n["node"] for n in by_token.nodes.get()] == ["pve1", "pve2"]
    exc = raises(by_token.nodes("pve1").qemu(123).config.get)
    assert exc.status_code == 500
    assert exc.content == "Configuration file 'nodes/pve1/qemu-server/123.conf' does not exist"
    assert json.dumps(by_ticket.version.get())
