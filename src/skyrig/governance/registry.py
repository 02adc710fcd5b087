"""The stack's MLflow model registry, read and changed through ``MlflowClient``.

skyrig reads what the workload writes at release time without importing the workload: the
registered model version (aliases, tags such as ``release_decision``) and the files logged under
``release/`` of the version's run (``model_card.json``, ``release_decision.json``, ...). Alias
moves made by skyrig (rollback, promotion) are recorded in the registered-model tag
``skyrig.alias_history.<alias>`` (a JSON list of ``{from, to, time, who, reason}``), and the
version rolled away from gets the tag ``rolled_back_at`` so a later rollback skips it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrig.errors import SkyrigError
from skyrig.governance.approver import approver_problem

#: Environment that keeps MLflow from contacting anything but the tracking store.
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_TELEMETRY": "false",
         "DO_NOT_TRACK": "true", "GIT_PYTHON_REFRESH": "quiet",
         "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
HISTORY_TAG = "skyrig.alias_history.{alias}"
ROLLED_BACK_TAG = "rolled_back_at"


class RegistryError(SkyrigError):
    """The model registry has no such model/alias/version, or refused a change."""


class ApproverError(RegistryError):
    """The approver given is no person's name (usage error, exit 2)."""

    exit_code = 2


def require_person(approver: str) -> str:
    """Return ``approver`` without surrounding whitespace if it can approve a release.

    Raises:
        ApproverError: The name is empty, an automated step's (whatever its case, spacing or
            punctuation: ``Release Gates``, ``CI-bot``) or holds a control character (exit 2);
            the rule is :func:`skyrig.governance.approver.approver_problem`, which the
            workload applies at release time too.
    """
    problem = approver_problem(approver)
    if problem is not None:
        message, hint = problem
        raise ApproverError(message, hint=hint)
    return approver.strip()


@dataclass(frozen=True)
class Version:
    """One registered model version: number, run, aliases, tags, creation time (UTC s)."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    created_s: float = 0.0

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def decision(self) -> str | None:
        return self.tags.get("release_decision")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "aliases": list(self.aliases), "tags": dict(self.tags),
                "created": dt.datetime.fromtimestamp(self.created_s, dt.UTC).isoformat()}


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class Registry:
    """A thin facade over ``MlflowClient`` for one tracking URI and one model name."""

    def __init__(self, tracking_uri: str, name: str) -> None:
        for k, v in QUIET.items():
            os.environ.setdefault(k, v)
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            if not db.is_file():  # reading must not create an empty store
                raise RegistryError(f"no model registry at {tracking_uri} ({db} does not exist)",
                                    hint="run the workload once (`skyrig up`) to register a"
                                         " model, or set skyrig:workload.tracking_uri")
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.name = name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _version(self, mv: Any) -> Version:
        return Version(name=self.name, version=str(mv.version), run_id=str(mv.run_id or ""),
                       aliases=tuple(sorted(getattr(mv, "aliases", None) or [])),
                       tags=dict(mv.tags or {}),
                       created_s=float(mv.creation_timestamp or 0) / 1000.0)

    def versions(self) -> list[Version]:
        """Every version of the model, oldest first (empty when the model does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            raise RegistryError(f"cannot read the model registry at {self.tracking_uri}: {exc}"
                                ) from exc
        # search results may omit aliases: read each version for its aliases
        out = [self.get(str(mv.version)) for mv in found]
        return sorted(out, key=lambda v: v.number)

    def get(self, version: str) -> Version:
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version(self.name, str(version)))
        except MlflowException as exc:
            raise RegistryError(f"{self.name} version {version} is not in the registry at"
                                f" {self.tracking_uri}",
                                hint="`skyrig model show` lists the registered versions"
                                ) from exc

    def resolve(self, alias: str) -> Version | None:
        """The version ``alias`` points to, or None."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None
        return self.get(str(mv.version))

    def require(self, alias: str) -> Version:
        v = self.resolve(alias)
        if v is None:
            raise RegistryError(f"{self.name}@{alias} does not exist in {self.tracking_uri}",
                                hint="train and release a version first (`skyrig up`)")
        return v

    def history(self, alias: str) -> list[dict[str, Any]]:
        """Alias moves made by skyrig, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags or {}
        except MlflowException:
            return []
        raw = tags.get(HISTORY_TAG.format(alias=alias))
        try:
            return list(json.loads(raw)) if raw else []
        except ValueError:
            return []

    def move_alias(self, alias: str, to: Version, *, reason: str, action: str) -> dict[str, Any]:
        """Point ``alias`` at ``to`` and append the move to the alias history."""
        cur = self.resolve(alias)
        self.client.set_registered_model_alias(self.name, alias, to.version)
        entry = {"action": action, "from": cur.version if cur else None, "to": to.version,
                 "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "who": _who(), "reason": reason}
        hist = [*self.history(alias), entry][-50:]
        self.client.set_registered_model_tag(self.name, HISTORY_TAG.format(alias=alias),
                                             json.dumps(hist))
        return entry

    def previous(self, alias: str) -> Version | None:
        """The newest version older than the alias's one with ``release_decision=go`` that was
        not rolled back; None when there is none."""
        cur = self.require(alias)
        older = [v for v in self.versions() if v.number < cur.number
                 and v.decision == "go" and ROLLED_BACK_TAG not in v.tags]
        return older[-1] if older else None

    def rollback(self, alias: str, *, to: str | None = None, reason: str = "") -> dict[str, Any]:
        """Move ``alias`` back to ``to`` (default: :meth:`previous`); tags the old version."""
        cur = self.require(alias)
        target = self.get(to) if to else self.previous(alias)
        if target is None:
            raise RegistryError(
                f"{self.name}@{alias} is version {cur.version}; no older version with"
                " release_decision=go to roll back to",
                hint="name one with --to VERSION (it must have been released with decision go)")
        if target.decision != "go":
            raise RegistryError(f"{self.name} version {target.version} has release_decision="
                                f"{target.decision!r}, not go: refusing to serve it")
        if target.version == cur.version:
            raise RegistryError(f"{self.name}@{alias} already is version {cur.version}")
        entry = self.move_alias(alias, target, reason=reason or "rollback", action="rollback")
        self.client.set_model_version_tag(self.name, cur.version, ROLLED_BACK_TAG, entry["time"])
        return entry

    def undo_rollback(self, alias: str, reason: str = "") -> dict[str, Any]:
        """Move ``alias`` back to where the last skyrig rollback took it from."""
        last = next((h for h in reversed(self.history(alias)) if h["action"] == "rollback"), None)
        if last is None or not last.get("from"):
            raise RegistryError(f"no skyrig rollback of {self.name}@{alias} to undo")
        target = self.get(str(last["from"]))
        entry = self.move_alias(alias, target, reason=reason or "undo rollback",
                                action="undo-rollback")
        self.client.delete_model_version_tag(self.name, target.version, ROLLED_BACK_TAG)
        return entry

    def promote(self, alias: str, version: str, *, reason: str = "") -> dict[str, Any]:
        """Point ``alias`` at ``version``; refuses unless its release decision is ``go``."""
        target = self.get(version)
        if target.decision != "go":
            raise RegistryError(
                f"{self.name} version {version} has release_decision={target.decision!r}:"
                " only a version released with decision go can be promoted",
                hint="see its release/release_decision.json (failed gates are listed there)")
        return self.move_alias(alias, target, reason=reason or "promotion", action="promote")

    def approve(self, version: str, approver: str, *, reason: str = "") -> dict[str, Any]:
        """Record that a named person reviewed and approved a released version.

        NIST AI RMF MEASURE 1.3 (independent assessors): the workload's pipeline records an
        approver only when it is given one at release time; this is the review afterwards.
        The version's ``release/release_decision.json`` gets ``approver`` (the person),
        ``approved_at`` (UTC, ISO 8601), and one more entry in ``approvals`` (person, time,
        account that recorded it, reason); the file is logged again to the version's run and
        the version gets the tag ``approver``. Approving again with the same name changes
        nothing, except that it sets the tag when an interrupted approval logged the file
        and stopped before the tag.

        Args:
            version: Registered version number, e.g. ``"3"``.
            approver: The reviewer's name (not an automated step's).
            reason: What was reviewed (recorded with the approval).

        Returns:
            ``{"version", "approver", "approved_at", "changed"}``.

        Raises:
            ApproverError: ``approver`` is no person's name (see :func:`require_person`).
            RegistryError: The version does not exist, was not released with decision go,
                or its run has no ``release/release_decision.json`` for that version.
        """
        import tempfile

        name = require_person(approver)
        v = self.get(version)
        if v.decision != "go":
            raise RegistryError(
                f"{self.name} version {version} has release_decision={v.decision!r}: a person"
                " approves only a release the gates passed",
                hint="see its release/release_decision.json (failed gates are listed there)")
        with tempfile.TemporaryDirectory(prefix="skyrig-approve-") as tmp:
            got = self.download(v, "release/release_decision.json", Path(tmp))
            if got is None:
                raise RegistryError(
                    f"{self.name} version {version} (run {v.run_id}) has no"
                    " release/release_decision.json",
                    hint="only versions released by the workload's pipeline can be approved")
            doc = json.loads(got.read_text())
            if str(doc.get("version")) != v.version:
                raise RegistryError(
                    f"release/release_decision.json of run {v.run_id} is for version"
                    f" {doc.get('version')}, not {v.version}",
                    hint="the run was registered twice; approve the version it was written for")
            if doc.get("approver") == name:
                # the file is logged before the tag is set: a run interrupted between the
                # two left the tag out, and this run finishes the approval
                tagged = v.tags.get("approver") == name
                if not tagged:
                    self.client.set_model_version_tag(self.name, v.version, "approver", name)
                return {"version": v.version, "approver": name,
                        "approved_at": doc.get("approved_at"), "changed": not tagged}
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            doc["approver"], doc["approved_at"] = name, now
            doc["approvals"] = [*doc.get("approvals", []),
                                {"approver": name, "time": now, "recorded_by": _who(),
                                 "reason": reason}]
            out = Path(tmp) / "upload" / "release_decision.json"
            out.parent.mkdir()
            out.write_text(json.dumps(doc, indent=2))
            self.client.log_artifact(v.run_id, str(out), artifact_path="release")
        self.client.set_model_version_tag(self.name, v.version, "approver", name)
        return {"version": v.version, "approver": name, "approved_at": now, "changed": True}

    def download(self, v: Version, artifact_path: str, dst: Path) -> Path | None:
        """Download ``artifact_path`` of the version's run into ``dst``; None if absent."""
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(download_artifacts(run_id=v.run_id, artifact_path=artifact_path,
                                           dst_path=str(dst), tracking_uri=self.tracking_uri))
        except (MlflowException, OSError):
            return None

    def list_artifacts(self, v: Version, path: str) -> dict[str, int]:
        """name → size (bytes) of the files logged under ``path`` of the version's run."""
        from mlflow.exceptions import MlflowException

        try:
            items = self.client.list_artifacts(v.run_id, path)
        except (MlflowException, OSError):
            return {}
        return {Path(i.path).name: int(i.file_size or 0) for i in items if not i.is_dir}

    def run_end_s(self, v: Version) -> float:
        """When the version's run last wrote (end time, else start), in UTC seconds."""
        run = self.client.get_run(v.run_id)
        t = run.info.end_time or run.info.start_time or 0
        return float(t) / 1000.0
