"""Parameter validation driven by the PVE 8.4 schema, with pve-common's exact messages.

Mirrors ``PVE::JSONSchema::check_prop`` / ``check_object`` / ``parse_property_string``: type
check, then format, pattern, lengths, range, enum; property strings are split on ``,`` with
``default_key``, ``alias`` and ``keyAlias`` handling. Patterns are matched anchored.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pvesim.apierror import param_error
from pvesim.formats import PROPERTY_STRING_FORMATS, SIMPLE_FORMATS, FormatError

#: ``name[n]`` options: how many indexes PVE defines (qemu-server constants).
INDEX_RANGES: dict[str, int] = {
    "hostpci": 16, "net": 32, "ipconfig": 32, "scsi": 31, "virtio": 16, "sata": 6, "ide": 4,
    "serial": 4, "parallel": 3, "usb": 14, "unused": 256, "numa": 8, "virtiofs": 10,
}

_INT = re.compile(r"^-?\d+$")
_NUM = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_INDEXED = re.compile(r"^([a-z]+)(\d+)$")


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:")
    return re.compile(f"(?:{pattern})")


def _scalar_repr(value: Any) -> str:
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        return "HASH"
    return f"'{value}'"


def check_type(value: Any, typ: str | None) -> tuple[bool, Any, str]:
    """Return (ok, normalised value, error text)."""
    if typ is None or typ == "any":
        return True, value, ""
    if typ == "string":
        if isinstance(value, (list, dict)):
            return False, value, f"type check ('string') failed - got {_scalar_repr(value)}"
        if isinstance(value, bool):
            return True, "1" if value else "0", ""
        return True, str(value), ""
    if typ == "boolean":
        if isinstance(value, bool):
            return True, int(value), ""
        if value in (0, 1) and isinstance(value, int):
            return True, value, ""
        if value in ("0", "1"):
            return True, int(value), ""
        return False, value, f"type check ('boolean') failed - got {_scalar_repr(value)}"
    if typ == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value, ""
        if isinstance(value, str) and _INT.match(value):
            return True, int(value), ""
        return False, value, f"type check ('integer') failed - got {_scalar_repr(value)}"
    if typ == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, value, ""
        if isinstance(value, str) and _NUM.match(value):
            return True, float(value) if any(c in value for c in ".eE") else int(value), ""
        return False, value, f"type check ('number') failed - got {_scalar_repr(value)}"
    if typ == "array":
        if isinstance(value, list):
            return True, value, ""
        if isinstance(value, dict):
            return False, value, "type check ('array') failed - got HASH"
        return True, [value], ""
    if typ == "object":
        if isinstance(value, dict):
            return True, value, ""
        return False, value, f"type check ('object') failed - got {_scalar_repr(value)}"
    return True, value, ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUM.match(value):
        return float(value)
    return None


def _fmt_num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_format(fmt: Any, value: str, path: str) -> Any:
    """Check a named or inline format; return the parsed value (dict for property strings)."""
    if isinstance(fmt, dict):
        return parse_property_string(fmt, value, path)
    if fmt in PROPERTY_STRING_FORMATS:
        return parse_property_string(PROPERTY_STRING_FORMATS[fmt], value, path)
    checker = SIMPLE_FORMATS.get(fmt)
    if checker is not None:
        checker(value)
        return value
    m = re.match(r"^(.*)-a?list$", fmt)
    if m and m.group(1) in SIMPLE_FORMATS:
        for part in re.split(r"[,;\s]+", value):
            if part:
                SIMPLE_FORMATS[m.group(1)](part)
    return value


def check_prop(value: Any, schema: dict[str, Any], path: str, errors: dict[str, str]) -> Any:
    """Validate one value; on error record it in ``errors`` and return None."""
    original = value
    ok, value, err = check_type(value, schema.get("type"))
    if not ok:
        errors[path] = err
        return None
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            out = []
            for idx, element in enumerate(value):
                out.append(check_prop(element, items, f"{path}[{idx}]", errors))
            return out
        return value
    if isinstance(value, dict):
        return value
    text = original if isinstance(original, str) else str(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, text, path)
        except FormatError as exc:
            errors[path] = f"invalid format - {exc}"
            return None
    pattern = schema.get("pattern")
    if pattern and not _regex(pattern).fullmatch(text):
        errors[path] = "value does not match the regex pattern"
        return None
    max_len = schema.get("maxLength")
    if max_len is not None and len(text) > int(max_len):
        errors[path] = f"value may only be {int(max_len)} characters long"
        return None
    min_len = schema.get("minLength")
    if min_len is not None and len(text) < int(min_len):
        errors[path] = f"value must be at least {int(min_len)} characters long"
        return None
    number = _number(value)
    if number is not None:
        maximum = _number(schema.get("maximum"))
        if maximum is not None and number > maximum:
            errors[path] = f"value must have a maximum value of {_fmt_num(schema['maximum'])}"
            return None
        minimum = _number(schema.get("minimum"))
        if minimum is not None and number < minimum:
            errors[path] = f"value must have a minimum value of {_fmt_num(schema['minimum'])}"
            return None
    enum = schema.get("enum")
    if enum and text not in [str(e) for e in enum]:
        errors[path] = (
            f"value '{text}' does not have a value in the enumeration '{', '.join(map(str, enum))}'"
        )
        return None
    return value


def _split_property_string(value: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted and i + 1 < len(value):
            i += 1
            cur.append(value[i])
        elif ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


_TRUE = {"1", "on", "yes", "true"}
_FALSE = {"0", "off", "no", "false"}


def parse_property_string(fmt: dict[str, Any], value: str, path: str = "") -> dict[str, Any]:
    """``PVE::JSONSchema::parse_property_string``; raises FormatError with PVE's text."""
    res: dict[str, Any] = {}
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    for part in _split_property_string(value):
        if part == "":
            continue
        if "=" in part:
            key, val = part.split("=", 1)
            schema = fmt.get(key)
            if schema is None:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if "alias" in schema:
                if "keyAlias" in schema:
                    alias_key = schema["keyAlias"]
                    if alias_key in res:
                        raise FormatError(
                            f"duplicate key in comma-separated list property: {alias_key}\n")
                    res[alias_key] = key
                key = schema["alias"]
                schema = fmt[key]
            if key in res:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            if schema.get("type") == "boolean":
                low = val.lower()
                val = "1" if low in _TRUE else "0" if low in _FALSE else val
            res[key] = val
        else:
            if default_key is None:
                raise FormatError("value without key, but schema does not define a default key\n")
            if default_key in res:
                raise FormatError(
                    f"duplicate key in comma-separated list property: {default_key}\n")
            res[default_key] = part
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, schema in fmt.items():
        if "alias" in schema:
            continue
        sub_path = f"{path}.{key}" if path else key
        if key not in res:
            if not schema.get("optional"):
                errors[sub_path] = "property is missing and it is not optional"
            continue
        checked = check_prop(res[key], schema, sub_path, errors)
        if sub_path not in errors:
            out[key] = checked
    if errors:
        lines = "".join(f"{k}: {v}\n" for k, v in sorted(errors.items()))
        raise FormatError(f"format error\n{lines}")
    return out


def print_property_string(fmt: dict[str, Any], values: dict[str, Any],
                          order: list[str] | None = None) -> str:
    """Render a property string: the default key first without ``key=``, others sorted."""
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    parts: list[str] = []
    keys = order or sorted(values)
    if default_key and default_key in values:
        parts.append(str(values[default_key]))
    for key in keys:
        if key == default_key or key not in values or values[key] is None:
            continue
        parts.append(f"{key}={values[key]}")
    return ",".join(parts)


def property_schema(properties: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema for ``key``, resolving ``name[n]`` declarations such as ``hostpci[n]``."""
    schema = properties.get(key)
    if schema is not None:
        return schema  # type: ignore[no-any-return]
    m = _INDEXED.match(key)
    if m:
        name, idx = m.group(1), int(m.group(2))
        schema = properties.get(f"{name}[n]")
        if schema is not None and idx < INDEX_RANGES.get(name, 32):
            return schema  # type: ignore[no-any-return]
    return None


def validate_params(properties: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Validate request parameters; return them normalised or raise 400 like PVE."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, schema in properties.items():
        if key.endswith("[n]"):
            continue
        if key not in params and not schema.get("optional"):
            errors[key] = "property is missing and it is not optional"
    for key, value in params.items():
        schema = property_schema(properties, key)
        if schema is None:
            errors[key] = (
                "property is not defined in schema and the schema does not allow additional "
                "properties"
            )
            continue
        checked = check_prop(value, schema, key, errors)
        if key not in errors:
            out[key] = checked
        requires = schema.get("requires")
        if requires and requires not in params:
            errors[requires] = f"missing property - '{key}' requires this property"
    if errors:
        raise param_error(errors)
    return out
