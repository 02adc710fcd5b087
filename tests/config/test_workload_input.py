"""skyrig:workload.input: DESI files reach the job as ``--data``/``--redshifts`` (on the data
volume for a KubeRay RayJob, on this machine for the local job), every wrong value is reported
with file, line and key path; and the RayJob's GPU pods must fit next to the always-on
RayCluster's minimum GPU workers."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from skyrig.config import load_stack
from skyrig.errors import SkyrigConfigError
from skyrig.kube.objects import entrypoint, entrypoint_args
from skyrig.plan.workload import input_args
from skyrig.workflows import workload as local_job
from support import edit_stack, make_root

pytestmark = pytest.mark.unit

PROD_ANCHOR = "    n_spectra: 1600000\n"
LOCAL_ANCHOR = "    n_spectra: 1500\n"


def _input(*lines: str) -> str:
    return "    input:\n" + "".join(f"      {line}\n" for line in lines)


def _with(tmp_path: Path, name: str, anchor: str, block: str) -> Path:
    root = make_root(tmp_path)
    edit_stack(root, name, anchor, anchor + block)
    return root


def _issues(root: Path, name: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SkyrigConfigError) as info:
        load_stack(name, root)
    return [(i.path, i.line, i.message + " " + i.hint) for i in info.value.issues]


def _line_starts(root: Path, name: str, line: int | None, text: str) -> bool:
    lines = (root / "stacks" / f"Pulumi.{name}.yaml").read_text().splitlines()
    return line is not None and lines[line - 1].strip().startswith(text)


def test_synthetic_by_default_adds_no_input_arguments() -> None:
    for name in ("local", "dev", "prod"):
        st = load_stack(name)
        assert st.config.workload.input.kind == "synthetic"
        assert input_args(st, "/data") == []


def test_rayjob_reads_desi_files_on_the_data_volume(tmp_path: Path) -> None:
    from qso_anomaly.pipeline import build_parser

    root = _with(tmp_path, "prod", PROD_ANCHOR, _input(
        "kind: desi",
        "paths: [dr1/healpix/main/dark/100, dr1/healpix/main/dark/101/coadd-main-dark-10123.fits]",
        "redshifts: [dr1/zcatalog/v1/zall-pix-iron.fits]"))
    st = load_stack("prod", root)
    args = entrypoint_args(st)
    mount = st.config.platform.data.mount_path
    i = args.index("--data")
    assert args[i:] == ["--data", f"{mount}/dr1/healpix/main/dark/100",
                        f"{mount}/dr1/healpix/main/dark/101/coadd-main-dark-10123.fits",
                        "--redshifts", f"{mount}/dr1/zcatalog/v1/zall-pix-iron.fits"]
    parsed = build_parser().parse_args(shlex.split(entrypoint(st))[3:])
    assert parsed.data == [f"{mount}/dr1/healpix/main/dark/100",
                           f"{mount}/dr1/healpix/main/dark/101/coadd-main-dark-10123.fits"]
    assert parsed.redshifts == [f"{mount}/dr1/zcatalog/v1/zall-pix-iron.fits"]


def test_local_job_reads_files_on_this_machine(tmp_path: Path) -> None:
    root = _with(tmp_path, "local", LOCAL_ANCHOR,
                 _input("kind: desi", "paths: [data/dr1]"))
    (root / "data" / "dr1").mkdir(parents=True)
    st = load_stack("local", root)
    argv = shlex.split(local_job.entrypoint(st, tmp_path / "run"))
    assert argv[argv.index("--data") + 1] == str((root / "data" / "dr1").resolve())
    assert "--redshifts" not in argv


BAD = [
    ("kuberay-absolute", "prod", PROD_ANCHOR,
     _input("kind: desi", "paths: [/home/astro/dr1]"), "paths[0]", "paths:",
     "relative to /data"),
    ("synthetic-with-paths", "prod", PROD_ANCHOR, _input("paths: [dr1]"), "paths",
     "paths:", "input.kind is synthetic"),
    ("desi-without-paths", "prod", PROD_ANCHOR, _input("kind: desi"), "kind", "kind:",
     "names no files"),
    ("parent-segment", "prod", PROD_ANCHOR, _input("kind: desi", "paths: [../etc]"),
     "paths[0]", "paths:", "without `..`"),
    # the RayJob entrypoint goes through bash, list2cmdline and /bin/sh: `;` would split it
    ("shell-separator", "prod", PROD_ANCHOR, _input("kind: desi", "paths: [dr1, 'a;b']"),
     "paths[1]", "paths:", "';', which the job's shell would read as syntax"),
    ("shell-substitution", "local", LOCAL_ANCHOR,
     _input("kind: desi", "paths: [stacks]", "redshifts: ['z $(id).fits']"),
     "redshifts[0]", "redshifts:", "'$' '(' ')'"),
    ("leading-blank", "prod", PROD_ANCHOR, _input("kind: desi", "paths: [' dr1']"),
     "paths[0]", "paths:", "starts or ends with a blank"),
    ("unknown-kind", "prod", PROD_ANCHOR, _input("kind: sdss", "paths: [dr1]"), "kind",
     "kind:", "'synthetic' or 'desi'"),
    ("local-missing", "local", LOCAL_ANCHOR, _input("kind: desi", "paths: [nowhere/dr1]"),
     "paths[0]", "paths:", "does not exist on this machine"),
    ("local-missing-redshifts", "local", LOCAL_ANCHOR,
     _input("kind: desi", "paths: [stacks]", "redshifts: [nowhere/zall.fits]"),
     "redshifts[0]", "redshifts:", "does not exist on this machine"),
    # a path listed twice: the job would read its files and score their spectra twice
    ("kuberay-duplicate", "prod", PROD_ANCHOR,
     _input("kind: desi", "paths: [dr1/100, dr1/101, dr1/100]"), "paths[2]", "paths:",
     "duplicate input path 'dr1/100': also paths[0]"),
    ("kuberay-duplicate-spelt-otherwise", "prod", PROD_ANCHOR,
     _input("kind: desi", "paths: [dr1/100, ./dr1/100/]"), "paths[1]", "paths:",
     "also paths[0] ('dr1/100', the same path)"),
    ("local-duplicate-redshifts", "local", LOCAL_ANCHOR,
     _input("kind: desi", "paths: [stacks]", "redshifts: [Pulumi.yaml, ./Pulumi.yaml]"),
     "redshifts[1]", "redshifts:", "also redshifts[0]"),
]


@pytest.mark.parametrize(("case", "name", "anchor", "block", "key", "line_text", "fragment"),
                         BAD, ids=[b[0] for b in BAD])
def test_wrong_input_names_file_line_and_key(tmp_path: Path, case: str, name: str, anchor: str,
                                             block: str, key: str, line_text: str,
                                             fragment: str) -> None:
    root = _with(tmp_path, name, anchor, block)
    issues = _issues(root, name)
    hits = [i for i in issues if i[0] == f"skyrig:workload.input.{key}"]
    assert hits and fragment in hits[0][2], issues
    assert _line_starts(root, name, hits[0][1], line_text) or \
        _line_starts(root, name, hits[0][1], "- " + line_text), (hits, line_text)


def test_a_local_path_listed_again_as_absolute_path_is_a_config_error(tmp_path: Path) -> None:
    """The same directory relative to the project root and absolute: `skyrig validate` names
    file, line and key of the second one and exits 2."""
    root = make_root(tmp_path)
    edit_stack(root, "local", LOCAL_ANCHOR, LOCAL_ANCHOR + _input(
        "kind: desi", f"paths: [stacks, {(root / 'stacks').resolve()}]"))
    issues = _issues(root, "local")
    hits = [i for i in issues if i[0] == "skyrig:workload.input.paths[1]"]
    assert hits and "also paths[0] ('stacks', the same path)" in hits[0][2], issues
    r = subprocess.run([sys.executable, "-m", "skyrig.cli", "validate", "--stack", "local"],
                       env={**os.environ, "SKYRIG_ROOT": str(root)},
                       capture_output=True, text=True, timeout=120)
    stack_file = root / "stacks" / "Pulumi.local.yaml"
    assert r.returncode == 2, r.stderr
    assert f"{stack_file}:{hits[0][1]}" in r.stderr and "workload.input.paths[1]" in r.stderr


def test_a_local_path_in_a_symlink_loop_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    """Resolving a link loop raises (RuntimeError on Python 3.11): the duplicate check stopped
    `skyrig validate` with an internal error instead of the path's config error (exit 2)."""
    root = make_root(tmp_path)
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    edit_stack(root, "local", LOCAL_ANCHOR, LOCAL_ANCHOR + _input(
        "kind: desi", "paths: [loop-a, stacks, ./loop-a]"))
    issues = _issues(root, "local")
    assert any(i[0] == "skyrig:workload.input.paths[0]" and "does not exist" in i[2]
               for i in issues), issues
    assert any(i[0] == "skyrig:workload.input.paths[2]" and "also paths[0]" in i[2]
               for i in issues), issues
    r = subprocess.run([sys.executable, "-m", "skyrig.cli", "validate", "--stack", "local"],
                       env={**os.environ, "SKYRIG_ROOT": str(root)},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "internal error" not in r.stderr, r.stderr


def test_rayjob_gpu_pods_must_fit_next_to_the_standing_cluster(tmp_path: Path) -> None:
    """prod: 14 actors x 0.5 GPU need 7 one-GPU pods; with the always-on RayCluster keeping
    2 GPU workers on the 8 GPU worker VMs, the job's pods would wait Pending."""
    root = make_root(tmp_path)
    edit_stack(root, "prod", "    gpu_workers_min: 1\n", "    gpu_workers_min: 2\n")
    issues = _issues(root, "prod")
    hits = [i for i in issues if i[0] == "skyrig:workload.scoring.concurrency"]
    assert hits and "stay Pending" in hits[0][2] and "lower concurrency to 12" in hits[0][2], \
        issues
    # the shipped prod stack fits exactly: 7 job pods + 1 standing = 8 GPU worker VMs
    assert load_stack("prod").config.ray.gpu_workers_min == 1


@pytest.mark.parametrize("concurrency", ["2", "auto"])
def test_rayjob_cluster_minimum_counts_next_to_the_standing_cluster(tmp_path: Path,
                                                                     concurrency: str) -> None:
    """The job's own RayCluster starts with at least ray.gpu_workers_min GPU pods too: with 5
    kept by each cluster on 8 GPU worker VMs, 2 of the job's pods would wait Pending even
    though its 2 actors (or ``auto``) need fewer pods than that."""
    root = make_root(tmp_path)
    edit_stack(root, "prod", "    gpu_workers_min: 1\n", "    gpu_workers_min: 5\n")
    edit_stack(root, "prod", "      concurrency: 14\n", f"      concurrency: {concurrency}\n")
    issues = _issues(root, "prod")
    hits = [i for i in issues if i[0] == "skyrig:ray.gpu_workers_min"]
    assert hits and "starts with 5 GPU worker pod(s)" in hits[0][2] and "stay Pending" in \
        hits[0][2] and "lower ray.gpu_workers_min to 4" in hits[0][2], issues
    edit_stack(root, "prod", "    gpu_workers_min: 5\n", "    gpu_workers_min: 4\n")
    assert load_stack("prod", root).config.ray.gpu_workers_min == 4



def test_model_size_reaches_the_pipeline(tmp_path: Path) -> None:
    """prod trains the full 7,781-pixel model; local the CI one (the workload's own parser)."""
    from qso_anomaly.pipeline import build_parser

    prod = build_parser().parse_args(shlex.split(entrypoint(load_stack("prod")))[3:])
    assert prod.full_model is True
    local = shlex.split(local_job.entrypoint(load_stack("local"), tmp_path))
    assert build_parser().parse_args(local[3:]).full_model is None  # the CI spec
    root = make_root(tmp_path)
    edit_stack(root, "prod", "    model_size: full", "    model_size: ci")
    ci = build_parser().parse_args(shlex.split(entrypoint(load_stack("prod", root)))[3:])
    assert ci.full_model is False


def test_the_full_model_on_cpus_is_a_warning_with_the_way_back(tmp_path: Path) -> None:
    """local trains on this machine's CPUs: model_size full is valid but slow; validate, plan
    and up's summary say so (file, line, key) and how to switch back; GPU stacks say nothing."""
    from rich.console import Console

    from skyrig.workflows.up import _print_summary

    root = _with(tmp_path, "local", LOCAL_ANCHOR, "    model_size: full\n")
    st = load_stack("local", root)
    assert [w.path for w in st.warnings] == ["skyrig:workload.model_size"]
    warning = st.warnings[0]
    assert _line_starts(root, "local", warning.line, "model_size: full")
    assert "on CPUs" in warning.message and "slower" in warning.message
    assert "model_size: ci" in warning.hint
    for name in ("local", "dev", "prod"):  # the shipped stacks: ci on CPUs, full on GPUs
        assert load_stack(name).warnings == ()
    env = {**os.environ, "SKYRIG_ROOT": str(root)}
    for cmd in (["validate"], ["plan", "--json"]):
        r = subprocess.run([sys.executable, "-m", "skyrig.cli", *cmd, "--stack", "local"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"warning: {st.file}:{warning.line}: skyrig:workload.model_size" in r.stderr
        assert "model_size: ci" in r.stderr
    console = Console(record=True, width=400)
    _print_summary({"stack": "local", "elapsed_s": 1.0,
                    "warnings": [w.render() for w in st.warnings]}, console)
    assert "model_size full trains" in console.export_text()
