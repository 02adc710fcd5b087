"""Bad input exits 2 with a message, quickly: alias bombs, huge files, odd file types, bad
characters, deep nesting, absurd command-line values, an output path that is not a directory."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyrig.cli import main
from skyrig.config import load_stack
from skyrig.config.source import MAX_STACK_BYTES
from skyrig.errors import SkyrigConfigError
from support import REPO, make_root

pytestmark = pytest.mark.unit

LOCAL = (REPO / "stacks" / "Pulumi.local.yaml").read_text()


def _exit(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the real console entry point in-process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["skyrig", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    code = exc.value.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"config:\n  skyrig:environment: local\n  skyrig:x: *a{levels}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "Pulumi.bomb.yaml"
    f.write_text(billion_laughs())
    assert len(f.read_bytes()) < 1000  # small as a file, 9**9 values once expanded
    assert _exit(["validate", "--stack", str(f)], monkeypatch) == 2
    assert "alias" in capsys.readouterr().err


def test_huge_file_is_refused_without_reading_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "Pulumi.big.yaml"
    with open(f, "w") as fh:
        fh.write(LOCAL)
        fh.write("# padding\n" * (50 * 1024 * 1024 // 10))
    assert f.stat().st_size > 50 * 1024 * 1024 > MAX_STACK_BYTES
    assert _exit(["validate", "--stack", str(f)], monkeypatch) == 2
    assert "limit" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "dangling-link"])
def test_unusual_file_types(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "Pulumi.odd.yaml"
    if kind == "directory":
        f.mkdir()
    elif kind == "fifo":
        os.mkfifo(f)  # reading it would block forever
    elif kind == "device":
        f.symlink_to("/dev/zero")  # reading it would never end
    else:
        f.symlink_to(tmp_path / "nowhere")
    assert _exit(["validate", "--stack", str(f)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert {"directory": "directory", "fifo": "FIFO", "device": "device",
            "dangling-link": "not found"}[kind] in err


@pytest.mark.parametrize(("data", "fragment"), [
    (b"config:\n  skyrig:environment: \xff\xfe local\n", "not UTF-8"),
    (b"config:\n  skyrig:environment: lo\x07cal\n", "not valid YAML"),
    (b"config:\n  skyrig:environment: local\x00\n", "not valid YAML"),
    (b"config: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nesting"),
    (b"config:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 200)), "nesting"),
    (b"config:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 60)), "nesting"),
    (b"config: {a: 1\n", "not valid YAML"),
    (b"config:\n  skyrig:x: &a [*a]\n", ""),
])
def test_unreadable_characters_and_nesting(data: bytes, fragment: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "Pulumi.bad.yaml"
    f.write_bytes(data)
    assert _exit(["validate", "--stack", str(f)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert fragment in err


@pytest.mark.parametrize("argv", [
    ["validate", "--stack", ""],
    ["validate", "--stack", "a\x00b"],
    ["validate", "--stack", "x" * 5000],
    ["validate", "--stack", "../../etc/passwd"],
    ["validate", "--stack", "nope"],
    ["plan", "--stack", "-" * 300],
    ["up", "--stack", "local", "--only", "everything"],
    ["down", "--stack", "local", "--only", ""],
    ["validate", "--bogus"],
])
def test_absurd_command_line_values(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    assert _exit(argv, monkeypatch) == 2
    assert "internal error" not in capsys.readouterr().err


def test_render_out_path_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "a-file"
    out.write_text("x")
    assert _exit(["render", "--stack", "local", "--out", str(out)], monkeypatch) == 2
    assert "not a directory" in capsys.readouterr().err
    below = out / "sub"
    assert _exit(["render", "--stack", "local", "--out", str(below)], monkeypatch) == 2


def test_pvesim_bad_options_exit_2() -> None:
    """`skyrig pvesim serve` with a missing profile or faults file: 2, not 0."""
    for extra in (["--hardware", "nope"], ["--faults", "/nonexistent/faults.yaml"]):
        r = subprocess.run([sys.executable, "-m", "skyrig.cli", "pvesim", "serve", "--port", "0",
                            "--state", "/nonexistent-dir/state.json", *extra], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (extra, r.returncode, r.stdout, r.stderr)
        assert "error" in r.stderr


# ------------------------------------------------------------------------------ fuzzing

_SCALARS = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(),
                     st.text(max_size=20), st.binary(max_size=10).map(repr))


def _bomb(levels: int, width: int) -> str:
    return billion_laughs(levels, width)


def _deep(depth: int, flow: bool) -> str:
    if flow:
        return "config:\n  skyrig:x: " + "[" * depth + "]" * depth + "\n"
    return "config:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))


_MALFORMED = st.one_of(
    st.builds(_bomb, st.integers(6, 12), st.integers(6, 12)),
    st.builds(_deep, st.integers(40, 3000), st.booleans()),
    # random bytes around a valid file, with at least one byte that is not UTF-8 or that YAML
    # does not allow (C0 controls other than tab/newline, DEL)
    st.builds(lambda pre, bad, post: pre + bad + LOCAL.encode() + post,
              st.binary(max_size=40),
              st.sampled_from([b"\xff", b"\xc3\x28", b"\x00", b"\x07", b"\x1b", b"\x7f"]),
              st.binary(max_size=40)),
    # structure: config that is not a map, keys of the wrong shape, wrong value types
    st.builds(lambda v: "config: " + repr(v) + "\n", _SCALARS),
    st.builds(lambda k, v: LOCAL + f"  skyrig:{k}: {v!r}\n",
              st.sampled_from(["vms", "proxmox", "ray", "nodes", "unknown_key"]), _SCALARS),
    # truncations of a valid file at random points, ending in an unclosed flow sequence
    st.integers(10, len(LOCAL) - 10).map(lambda n: LOCAL[:n] + "\n  skyrig:zz: [unclosed\n"),
)


@settings(max_examples=60, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=_MALFORMED)
def test_fuzzed_malformed_stack_files_exit_2(doc: str | bytes, tmp_path: Path) -> None:
    """Every generated malformed file: SkyrigConfigError (exit 2) within the deadline."""
    f = tmp_path / "Pulumi.fuzz.yaml"
    f.write_bytes(doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass"))
    root = make_root(tmp_path) if not (tmp_path / "root").exists() else tmp_path / "root"
    with pytest.raises(SkyrigConfigError) as exc:
        load_stack(f, root)
    assert exc.value.exit_code == 2
