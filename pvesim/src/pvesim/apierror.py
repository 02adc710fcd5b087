"""Errors as PVE sends them: status code, reason phrase, ``errors`` per parameter, ``message``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client exactly as PVE's API server would.

    ``message`` is the full error text (PVE's ``die`` text, usually ending in a newline); its
    first line becomes the HTTP reason phrase. ``errors`` is the per-parameter map of a 400.
    ``empty_body`` reproduces the auth-layer 401s, which PVE 8.4 sends without a body.
    """

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, str] | None = None,
        *,
        empty_body: bool = False,
    ) -> None:
        if not message.endswith("\n"):
            message += "\n"
        self.status = status
        self.message = message
        self.errors = errors
        self.empty_body = empty_body
        super().__init__(f"{status} {self.reason}")

    @property
    def reason(self) -> str:
        return self.message.split("\n", 1)[0]

    def body(self) -> dict[str, Any] | None:
        if self.empty_body:
            return None
        out: dict[str, Any] = {"data": None}
        if self.errors:
            out["errors"] = self.errors
        out["message"] = self.message
        return out


def param_error(errors: dict[str, str]) -> ApiError:
    """400 ``Parameter verification failed.`` with PVE's per-parameter texts."""
    return ApiError(400, "Parameter verification failed.\n", errors)


def die(message: str) -> ApiError:
    """A plain ``die "text\\n"`` in a PVE handler: HTTP 500 with that text."""
    return ApiError(500, message)


def perm_error(what: str | None = None) -> ApiError:
    """``raise_perm_exc``: 403 ``Permission check failed (<what>)``."""
    return ApiError(403, f"Permission check failed ({what})" if what else "Permission check failed")


class TaskFailure(Exception):
    """Raised inside a task worker: the task ends with ``TASK ERROR: <message>``."""

    def __init__(self, message: str) -> None:
        self.message = message.rstrip("\n")
        super().__init__(self.message)


class PveSimError(Exception):
    """pvesim itself cannot do what was asked (bad hardware file, state file, port...).

    ``message`` says what is wrong, ``hint`` what to do; ``exit_code`` is what a command line
    should exit with (2 for bad input such as an unknown hardware profile, 1 otherwise).
    """

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        super().__init__(message if hint is None else f"{message}\n  → {hint}")
