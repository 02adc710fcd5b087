"""Load and validate a stack: file → :class:`Stack` (typed model + where each key is)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from skyrig.config.checks import Sections, run_advice, run_checks
from skyrig.config.model import SecretRef, StackConfig
from skyrig.config.source import StackSource, read_stack_file
from skyrig.errors import ConfigIssue, SkyrigConfigError

SECRET_KEY_RE = re.compile(
    r"(secret|secret_?key|password|passwd|pwd|api_?key|private_?key|api_?token|access_?key|credentials?)$",
    re.I,
)
#: A stack named on the command line (not a path): letters, digits, `.`, `_`, `-`.
STACK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Stack:
    """A validated environment: its name, typed config, source file and project root.

    Attributes:
        name: Stack name (``local``, ``dev``, ``prod``; from ``Pulumi.<name>.yaml``).
        config: The validated ``skyrig:`` values.
        source: The file's raw values and key lines.
        root: The project root (holds ``Pulumi.yaml`` and ``stacks/``).
        warnings: What validation accepted but will likely not do what is meant (e.g. the
            full-size model on CPUs), with file, line and key path; see
            :func:`skyrig.config.checks.advice`.
    """

    name: str
    config: StackConfig
    source: StackSource
    root: Path
    warnings: tuple[ConfigIssue, ...] = ()

    @property
    def file(self) -> Path:
        """The stack file's path."""
        return self.source.file

    @property
    def state_dir(self) -> Path:
        """Where skyrig keeps this stack's local state (pvesim, Ray, runs, Pulumi backend).

        ``$SKYRIG_STATE_DIR/<stack>`` or ``<root>/.skyrig/<stack>``; not created here.
        """
        base = os.environ.get("SKYRIG_STATE_DIR")
        return (Path(base) if base else self.root / ".skyrig") / self.name


def project_root(start: Path | None = None) -> Path:
    """Return the skyrig project root: ``$SKYRIG_ROOT`` or the nearest parent holding it.

    The root is the nearest directory (``start`` or a parent) with both ``Pulumi.yaml`` and
    ``stacks/`` (Pulumi's project layout).

    Args:
        start: Where to start looking (default: the working directory).

    Returns:
        The resolved root directory.

    Raises:
        SkyrigConfigError: No such directory above ``start`` and ``$SKYRIG_ROOT`` is unset.
    """
    env = os.environ.get("SKYRIG_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file() and (candidate / "stacks").is_dir():
            return candidate
    raise SkyrigConfigError(
        ConfigIssue(
            str(here),
            None,
            "",
            "not inside a skyrig project (no Pulumi.yaml + stacks/)",
            "run from the repository root or set SKYRIG_ROOT",
        )
    )


def stack_file(stack: str | Path, root: Path) -> Path:
    """Return the stack file for a stack name or path.

    Args:
        stack: A stack name (``local`` → ``<root>/stacks/Pulumi.local.yaml``, Pulumi's
            ``Pulumi.<stack>.yaml`` naming) or a path (ends in ``.yaml``/``.yml`` or holds a
            separator; taken as it is, resolved).
        root: The project root.

    Returns:
        The stack file path (not checked for existence).

    Raises:
        SkyrigConfigError: ``stack`` is neither a stack name (:data:`STACK_NAME_RE`) nor a usable
            path (empty, NUL bytes, longer than 4096 bytes, unresolvable).
    """
    text = str(stack)
    if not text or "\x00" in text or len(text.encode("utf-8", "replace")) > 4096:
        raise SkyrigConfigError(ConfigIssue(
            repr(text[:80]), None, "", "not a stack name or a stack file path",
            "pass a stack name such as `local` or the path of a Pulumi.<stack>.yaml file"))
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        try:
            return Path(text).resolve()
        except (OSError, RuntimeError) as exc:
            raise SkyrigConfigError(ConfigIssue(
                text, None, "", f"cannot resolve the stack file path: {exc}",
                "pass an existing Pulumi.<stack>.yaml file")) from None
    if not STACK_NAME_RE.match(text):
        raise SkyrigConfigError(ConfigIssue(
            repr(text[:80]), None, "", "not a stack name (letters, digits, `.`, `_`, `-`)",
            "pass a stack name such as `local` or the path of a Pulumi.<stack>.yaml file"))
    return root / "stacks" / f"Pulumi.{text}.yaml"


def _plaintext_secrets(
    values: Any, path: tuple[str | int, ...], src: StackSource, out: list[ConfigIssue]
) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            kp = (*path, key)
            if SECRET_KEY_RE.search(key) and isinstance(value, str | int | float):
                out.append(
                    src.issue(
                        kp,
                        "plain-text secret in a stack file",
                        "use `pulumi config set --secret` (a `secure:` value) or"
                        " `{env: VARIABLE}` and export the variable",
                    )
                )
            else:
                _plaintext_secrets(value, kp, src, out)
    elif isinstance(values, list):
        for i, value in enumerate(values):
            _plaintext_secrets(value, (*path, i), src, out)


def _describe(err: dict[str, Any], model_field_hint: str) -> tuple[str, str]:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing", model_field_hint or "add it"
    if kind == "extra_forbidden":
        return "unknown key", "remove it or check its spelling (see docs/stack-reference.md)"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg} (got {shown})", model_field_hint


def _field_hint(loc: tuple[str | int, ...]) -> str:
    """The description of the field at ``loc`` in the model, used as a fix hint."""
    model: Any = StackConfig
    desc = ""
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return desc
        by_alias = {(f.alias or n): f for n, f in fields.items()}
        field = by_alias.get(str(part))
        if field is None:
            return desc
        desc = field.description or ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if hasattr(a, "model_fields")), None)
    return desc


def _foreign_secrets(src: StackSource, out: list[ConfigIssue]) -> None:
    """Plain-text secrets under the other namespaces (``proxmox:password: hunter2``)."""

    def walk(value: Any, shown: str, key: str) -> None:
        if isinstance(value, dict):
            if set(value) == {"secure"}:
                return  # Pulumi's own secret form; its ciphertext is checked by SecretRef rules
            for k, v in value.items():
                walk(v, f"{shown}.{k}", str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{shown}[{i}]", key)
        elif SECRET_KEY_RE.search(key) and isinstance(value, str | int | float) and value != "":
            out.append(ConfigIssue(
                str(src.file), src.other_lines.get(shown.split(".")[0].split("[")[0]), shown,
                "plain-text secret in a stack file",
                f"use `pulumi config set --secret {shown.split('.')[0]} ...` (a `secure:` value)"
                " or the provider's environment variable"))
        elif isinstance(value, str) and URI_CREDENTIALS_RE.search(value):
            out.append(ConfigIssue(
                str(src.file), src.other_lines.get(shown.split(".")[0].split("[")[0]), shown,
                "a URI with credentials (user:password@) in a stack file",
                "move the credentials to a secret and keep only the host in the URI"))

    for full_key, value in src.other_namespaces.items():
        name = full_key.partition(":")[2] or full_key
        walk(value, full_key, name)


#: ``scheme://user:password@host`` (credentials inside a URI).
URI_CREDENTIALS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")


def _uri_credentials(values: Any, path: tuple[str | int, ...], src: StackSource,
                     out: list[ConfigIssue]) -> None:
    """No ``user:password@`` inside any URI-valued skyrig key (``workload.tracking_uri``, ...)."""
    if isinstance(values, dict):
        for key, value in values.items():
            _uri_credentials(value, (*path, key), src, out)
    elif isinstance(values, list):
        for i, value in enumerate(values):
            _uri_credentials(value, (*path, i), src, out)
    elif isinstance(values, str) and URI_CREDENTIALS_RE.search(values):
        out.append(src.issue(
            path, "a URI with credentials (user:password@): they would reach the console, the"
            " job log and the Ray job's metadata",
            "remove them from the URI and give them to the service through its own secret"
            " variables (for MLflow: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"))


def validate_source(src: StackSource, name: str, root: Path) -> Stack:
    """Validate every section, then the cross-field rules; raise once with every issue.

    Secrets: plain-text values under secret-like keys are refused in every namespace, URIs
    carrying ``user:password@`` are refused, and ``secure:`` values must have Pulumi's
    ciphertext form (Pulumi docs: "Secrets", ``pulumi config set --secret``).

    Args:
        src: The parsed stack file.
        name: The stack name.
        root: The project root (relative paths in the stack resolve against it).

    Returns:
        The validated stack.

    Raises:
        SkyrigConfigError: Anything is wrong; ``issues`` lists every problem with file, line, key
            path and a fix.
    """
    issues: list[ConfigIssue] = []
    _plaintext_secrets(src.values, (), src, issues)
    _foreign_secrets(src, issues)
    _uri_credentials(src.values, (), src, issues)
    validated: dict[str, Any] = {}
    fields = StackConfig.model_fields
    for key in src.values:
        if key not in fields:
            issues.append(
                src.issue((key,), "unknown skyrig key", f"known keys: {', '.join(sorted(fields))}")
            )
    for key, field in fields.items():
        if key not in src.values:
            if field.is_required():
                issues.append(
                    src.issue(
                        (key,),
                        f"required key skyrig:{key} is missing",
                        field.description or "add it to the stack file",
                    )
                )
            else:
                validated[key] = field.get_default(call_default_factory=True)
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(field.annotation)  # type: ignore[arg-type]
            validated[key] = adapter.validate_python(src.values[key])
        except ValidationError as exc:
            if any(
                i.path.startswith(f"skyrig:{key}") and "plain-text" in i.message for i in issues
            ):
                continue
            for err in exc.errors():
                loc = (key, *err["loc"])
                message, hint = _describe(dict(err), _field_hint(loc))
                issues.append(src.issue(loc, message, hint))
    sections = Sections(**{k: validated.get(k) for k in Sections.__dataclass_fields__})
    issues.extend(run_checks(sections, src, root))
    if issues:
        raise SkyrigConfigError(issues)
    config = StackConfig.model_validate(validated)
    return Stack(name=name, config=config, source=src, root=root,
                 warnings=tuple(run_advice(sections, src, root)))


def load_stack(stack: str | Path, root: Path | None = None) -> Stack:
    """Read and validate ``stacks/Pulumi.<stack>.yaml`` (or a path).

    Args:
        stack: A stack name or a stack file path (see :func:`stack_file`).
        root: The project root (default: :func:`project_root`).

    Returns:
        The validated stack, named after the file (``Pulumi.<name>.yaml``).

    Raises:
        SkyrigConfigError: No project root, a bad name or path, an unreadable or malformed file,
            or any validation issue (all reported at once; exit status 2).
    """
    root = root or project_root()
    file = stack_file(stack, root)
    src = read_stack_file(file)
    name = file.name.removeprefix("Pulumi.").rsplit(".", 1)[0]
    return validate_source(src, name, root)


def resolve_secret(ref: SecretRef, what: str) -> str:
    """Return a secret's value when Pulumi is not the caller: read from the environment.

    Args:
        ref: The secret reference of the stack (``env:`` and/or Pulumi ``secure:``).
        what: What the secret is for, to name it in the error.

    Returns:
        The value of the environment variable ``ref.env``.

    Raises:
        SkyrigConfigError: The variable is unset or empty (a ``secure:`` value can only be read by
            ``pulumi up``).
    """
    if ref.env and os.environ.get(ref.env):
        return os.environ[ref.env]
    raise SkyrigConfigError(
        f"{what}: the secret is not available; export {ref.env or 'the variable named by `env:`'}"
        + (" (its Pulumi-encrypted value can only be read by `pulumi up`)" if ref.secure else "")
    )
