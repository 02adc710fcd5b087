"""`skyrig up --stack dev --only platform` preconditions: no kubeconfig → exit 2 naming the three
ways to give one; a kubeconfig whose API server does not answer → exit 1 naming the server,
within the configured timeout, nothing changed. (No Kubernetes API server can run here.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support import edit_stack, make_root

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(root: Path, state: Path, *, kubeconfig: str | None = None,
        only: str = "platform") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SKYRIG_KUBECONFIG"}
    env.update(SKYRIG_ROOT=str(root), SKYRIG_STATE_DIR=str(state), COLUMNS="200")
    if kubeconfig is not None:
        env["SKYRIG_KUBECONFIG"] = kubeconfig
    return subprocess.run(
        [sys.executable, "-m", "skyrig.cli", "up", "--stack", "dev", "--only", only],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)


def _files(path: Path) -> list[Path]:
    # the run lock (run.lock*) is the only file a refused or failed run may leave
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("run.lock")
                  ) if path.exists() else []


@pytest.mark.parametrize("only", ["platform", "workload"])
def test_no_kubeconfig_exits_2_naming_three_ways(tmp_path: Path, only: str) -> None:
    root, state = make_root(tmp_path), tmp_path / "state"
    proc = _up(root, state, only=only)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "no kubeconfig for stack dev" in err
    assert "pulumi config set --secret" in err
    assert "export SKYRIG_KUBECONFIG=" in err
    assert f"{state / 'dev' / 'kubeconfig'}" in err and "skyrig ansible run k8s" in err
    assert _files(state) == []


def test_unanswering_api_server_exits_1_naming_it(tmp_path: Path) -> None:
    root, state = make_root(tmp_path), tmp_path / "state"
    edit_stack(root, "dev", "  skyrig:platform:\n", "  skyrig:platform:\n    api_timeout_s: 3\n")
    port = _closed_port()
    server = f"https://127.0.0.1:{port}"
    kubeconfig = (
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        f"clusters: [{{name: dev, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: dev, context: {cluster: dev, user: admin}}]\n"
        "users: [{name: admin, user: {token: not-a-real-token}}]\n")
    proc = _up(root, state, kubeconfig=kubeconfig)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"the Kubernetes API server {server}" in err
    assert "did not answer within 3 s" in err and "nothing was changed" in err
    assert "not-a-real-token" not in proc.stdout + proc.stderr
    assert _files(state) == []


def test_kubeconfig_file_is_found_and_its_server_named(tmp_path: Path) -> None:
    root, state = make_root(tmp_path), tmp_path / "state"
    (state / "dev").mkdir(parents=True)
    port = _closed_port()
    (state / "dev" / "kubeconfig").write_text(
        "apiVersion: v1\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:"
        f"{port}'}}}}]\ncontexts: [{{name: c, context: {{cluster: c}}}}]\ncurrent-context: c\n")
    proc = _up(root, state)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "kubeconfig from" in proc.stdout
    assert _files(state) == [state / "dev" / "kubeconfig"]


def _listening_kubeconfig() -> tuple[socket.socket, str]:
    """A loopback TCP listener standing in for an API server that accepts connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    return srv, (
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        f"clusters: [{{name: dev, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: dev, context: {cluster: dev, user: admin}}]\n")


def test_without_pulumi_cli_platform_exits_2_with_the_offline_path(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    root, state = make_root(tmp_path), tmp_path / "state"
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no `pulumi` on PATH
    srv, kubeconfig = _listening_kubeconfig()
    with srv:
        proc = _up(root, state, kubeconfig=kubeconfig)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "the Pulumi CLI is not installed" in err
    assert "skyrig render --stack dev" in err and "kubectl apply --server-side" in err
    assert _files(state) == []


def test_workload_without_kubernetes_client_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("pulumi")
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the kubernetes client is installed: this checks the message without it")
    root, state = make_root(tmp_path), tmp_path / "state"
    srv, kubeconfig = _listening_kubeconfig()
    with srv:
        proc = _up(root, state, kubeconfig=kubeconfig, only="workload")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs the `kubernetes` Python client" in " ".join(proc.stderr.split())


@pytest.mark.parametrize(("only", "fragments"), [
    ("platform", ["does not tear down a Kubernetes stack", "namespace skyrig-ray",
                  "qso-results", "pulumi destroy -s dev", "kubectl delete -f"]),
    ("workload", ["does not tear down a Kubernetes stack", "kubectl -n skyrig-ray delete rayjob"
                  " qso-anomaly-v0-3-0-candidate"]),
])
def test_down_of_a_kubernetes_layer_refuses_and_says_what_stays(tmp_path: Path, only: str,
                                                                 fragments: list[str]) -> None:
    """`down --only platform|workload` on a Kubernetes stack used to report the layer done and
    change nothing; it now exits 2 naming what stays (the namespace holds the data claims)."""
    root, state = make_root(tmp_path), tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "SKYRIG_KUBECONFIG"}
    env.update(SKYRIG_ROOT=str(root), SKYRIG_STATE_DIR=str(state), COLUMNS="400")
    proc = subprocess.run(
        [sys.executable, "-m", "skyrig.cli", "down", "--stack", "dev", "--only", only],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    for fragment in fragments:
        assert fragment in err, err
    assert _files(state) == []


@pytest.mark.parametrize(("token", "fragments"), [
    (None, ["proxmox token: the secret is not available",
            "export SKYRIG_PROXMOX_TOKEN_SECRET"]),
    ("not-checked-here", ["Pulumi.dev.yaml:{line}: skyrig:proxmox.ca_bundle",
                          "no-ca.pem does not exist on this machine"]),
])
def test_down_of_a_kubernetes_stack_checks_the_pve_credentials_first(
        tmp_path: Path, token: str | None, fragments: list[str]) -> None:
    """`down --stack dev` printed what the workload and platform layers keep, then failed at
    the infra layer's missing PVE token (or CA bundle); it now fails first (exit 2), before any
    layer runs or prints, and leaves nothing."""
    root, state = make_root(tmp_path), tmp_path / "state"
    edit_stack(root, "dev", "/etc/skyrig/pve-root-ca.pem", str(tmp_path / "no-ca.pem"))
    env = {k: v for k, v in os.environ.items() if k not in (
        "SKYRIG_KUBECONFIG", "SKYRIG_PROXMOX_TOKEN_SECRET", "SKYRIG_PVESIM_ENDPOINT")}
    env.update(SKYRIG_ROOT=str(root), SKYRIG_STATE_DIR=str(state), COLUMNS="400",
               SKYRIG_FORCE_DIRECT="1")  # the direct apply reads the token here, Pulumi does not
    if token is not None:
        env["SKYRIG_PROXMOX_TOKEN_SECRET"] = token
    proc = subprocess.run([sys.executable, "-m", "skyrig.cli", "down", "--stack", "dev"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    lines = (root / "stacks" / "Pulumi.dev.yaml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.strip().startswith("ca_bundle:"))
    for fragment in fragments:
        assert fragment.format(line=line) in err, err
    assert "kept" not in proc.stdout and "down:" not in proc.stdout, proc.stdout
    assert _files(state) == []


def test_down_takes_a_ca_directory_as_the_pve_client_does(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """requests (the PVE client's transport) verifies with a CA bundle file or a directory of
    hashed CA certificates (/etc/ssl/certs); `up` works with either, so `down`'s credential
    check must not refuse the directory as missing."""
    from skyrig.config import load_stack
    from skyrig.errors import SkyrigConfigError
    from skyrig.workflows.provision import check_deprovision

    root = make_root(tmp_path)
    cadir = tmp_path / "ca.d"
    cadir.mkdir()
    edit_stack(root, "dev", "/etc/skyrig/pve-root-ca.pem", str(cadir))
    monkeypatch.setenv("SKYRIG_FORCE_DIRECT", "1")
    monkeypatch.setenv("SKYRIG_PROXMOX_TOKEN_SECRET", "not-checked-here")
    monkeypatch.delenv("SKYRIG_PVESIM_ENDPOINT", raising=False)
    stack = load_stack("dev", root)
    check_deprovision(stack)  # a directory is a CA path
    edit_stack(root, "dev", str(cadir), str(tmp_path / "absent"))
    with pytest.raises(SkyrigConfigError, match="absent does not exist"):
        check_deprovision(load_stack("dev", root))
