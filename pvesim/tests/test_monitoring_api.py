"""The endpoints prometheus-pve-exporter reads and the read-only token it uses (PVEAuditor on /),
checked with the real exporter's collectors against a live pvesim."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvesim import PveSim
from pvesim.testing import proxmox_client

pytestmark = pytest.mark.integration


def _auditor(prox: ProxmoxAPI) -> tuple[str, str]:
    prox.access.users.post(userid="monitor@pve", comment="metrics")
    tok = prox.access.users("monitor@pve").token("exporter").post(privsep=1)
    # a privilege-separated token holds what both it and its user hold (PVE's rule)
    prox.access.acl.put(path="/", roles="PVEAuditor", users="monitor@pve",
                        tokens=tok["full-tokenid"])
    assert tok["full-tokenid"] == "monitor@pve!exporter" and tok["info"]["privsep"] == 1
    return tok["full-tokenid"], tok["value"]


def test_cluster_status_has_pve_shape(prox: ProxmoxAPI, sim: PveSim) -> None:
    status = prox.cluster.status.get()
    cluster = [e for e in status if e["type"] == "cluster"]
    nodes = [e for e in status if e["type"] == "node"]
    assert cluster == [{"type": "cluster", "id": "cluster", "name": "pvesim",
                        "nodes": len(sim.nodes), "quorate": 1, "version": len(sim.nodes) + 1}]
    assert [n["id"] for n in nodes] == [f"node/{n}" for n in sim.nodes]
    assert all(n["online"] == 1 and {"nodeid", "ip", "local", "level"} <= set(n) for n in nodes)
    node = sim.nodes[0]
    assert prox.nodes(node).lxc.get() == []
    assert prox.nodes(node).replication.get() == []
    assert prox.nodes(node).subscription.get()["status"] == "notfound"
    assert prox.cluster.config.qdevice.get() == {}


def test_auditor_token_reads_but_cannot_act(prox: ProxmoxAPI, sim: PveSim) -> None:
    token = _auditor(prox)
    ro = proxmox_client(sim, token=token)
    assert ro.cluster.status.get()
    assert ro.version.get()["release"]
    with pytest.raises(ResourceException) as err:
        ro.access.users.post(userid="evil@pve")
    assert err.value.status_code == 403
    with pytest.raises(ResourceException):
        prox.access.users("monitor@pve").token("exporter").post()  # already exists


def test_unprivileged_token_cannot_read_cluster_status(prox: ProxmoxAPI, sim: PveSim) -> None:
    prox.access.users.post(userid="nobody@pve")
    tok = prox.access.users("nobody@pve").token("tk").post()
    with pytest.raises(ResourceException) as err:
        proxmox_client(sim, token=(tok["full-tokenid"], tok["value"])).cluster.status.get()
    assert err.value.status_code == 403


def test_real_pve_exporter_collects_from_pvesim(prox: ProxmoxAPI, sim: PveSim) -> None:
    pytest.importorskip("pve_exporter")
    from pve_exporter.collector import CollectorsOptions, collect_pve

    user = _auditor(prox)[0].split("!")[0]
    tok = prox.access.users("monitor@pve").token("scrape").post(privsep=1)
    prox.access.acl.put(path="/", roles="PVEAuditor", tokens=tok["full-tokenid"])
    config: dict[str, Any] = {"user": user, "token_name": "scrape", "token_value": tok["value"],
                              "verify_ssl": str(sim.ca_path)}
    opts = CollectorsOptions(status=True, version=True, node=True, cluster=True, resources=True,
                             config=True, replication=True, subscription=True,
                             backup_info=True, qdevice=True)
    text = collect_pve(config, f"{sim.host}:{sim.port}", True, True, opts).decode()
    for n in sim.nodes:
        assert f'pve_up{{id="node/{n}"}} 1.0' in text
    assert 'pve_up{id="cluster/pvesim"} 1.0' in text
    assert "pve_version_info" in text and "pve_subscription_info" in text


def test_a_node_taken_offline_reads_like_pve(prox: ProxmoxAPI, sim: PveSim) -> None:
    """A cluster member lost (power, network): /cluster/status online 0, /nodes and
    /cluster/resources status offline, requests proxied to it 595; back online, all as before;
    an unknown node is refused."""
    from pvesim.apierror import PveSimError

    node, other = sim.nodes[0], sim.nodes[1]
    assert sim.set_node_online(node, False) == [node]
    status = {e["id"]: e for e in prox.cluster.status.get()}
    assert status[f"node/{node}"]["online"] == 0 and status[f"node/{other}"]["online"] == 1
    assert {n["node"]: n["status"] for n in prox.nodes.get()}[node] == "offline"
    res = {r["id"]: r for r in prox.cluster.resources.get(type="node")}
    assert res[f"node/{node}"]["status"] == "offline" and "maxmem" not in res[f"node/{node}"]
    with pytest.raises(ResourceException) as err:
        prox.nodes(node).qemu.get()
    assert err.value.status_code == 595 and "No route to host" in str(err.value)
    assert prox.nodes(other).qemu.get() is not None
    assert sim.set_node_online(node, True) == []
    assert all(e["online"] == 1 for e in prox.cluster.status.get() if e["type"] == "node")
    assert prox.nodes(node).qemu.get() is not None
    with pytest.raises(PveSimError, match="no node 'nope'"):
        sim.set_node_online("nope", False)


def test_node_online_over_http_takes_only_a_boolean(prox: ProxmoxAPI, sim: PveSim) -> None:
    """``PUT /_pvesim/nodes/<node>/online``: ``{"online": false}`` takes the node offline,
    ``true`` brings it back; ``"false"`` (a string), ``null``, a missing key, a non-object or
    non-JSON body and an unknown node are refused with 400 (not 500, and never read as
    "online")."""
    import requests

    node = sim.nodes[0]
    tid, secret = sim.root_token
    url = f"https://127.0.0.1:{sim.port}/_pvesim/nodes/{{}}/online"

    def put(name: str, body: str) -> requests.Response:
        return requests.put(url.format(name), data=body, verify=str(sim.ca_path), timeout=10,
                            headers={"Authorization": f"PVEAPIToken={tid}={secret}",
                                     "Content-Type": "application/json"})

    try:
        resp = put(node, '{"online": false}')
        assert resp.status_code == 200 and resp.json()["data"] == {"offline": [node]}
        for body in ('{"online": "false"}', '{"online": "true"}', '{"online": null}', "{}",
                     "[1]", "not json"):
            resp = put(node, body)
            assert resp.status_code == 400, (body, resp.status_code, resp.text)
            assert sim.backend.data["nodes_offline"] == [node], body  # unchanged
        resp = put("nope", '{"online": false}')
        assert resp.status_code == 400 and "no node 'nope'" in resp.text, resp.text
        resp = put(node, '{"online": true}')
        assert resp.status_code == 200 and resp.json()["data"] == {"offline": []}
    finally:
        sim.set_node_online(node, True)
