"""A config's validation errors as one line per bad key: `<full key>: <what is wrong>`.

pydantic names an error by its location (`('train', 'lr')`); a config's reader wants the key as
written in YAML (`train.lr`, `method_options.lfr.schedule[0].drop`), what is wrong, the value
given, and for YAML's traps (a number in quotes, `1e-3`) the fix. lfr/config.py's validators raise
`key_error` to name a key below the field they check; `flat_errors` puts it there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from lfr.config import ConfigError


def path(loc: Iterable[str | int]) -> str:
    """A pydantic location as a config key: `method_options.lfr.schedule[0].drop`; a key that is
    not a plain name is quoted (`custom_models['v 1']`), so the path stays one unambiguous line."""
    parts, out = list(loc), ""
    for i, part in enumerate(parts):
        if part == "[key]":  # the key itself has the wrong type, e.g. YAML's `1:`
            out += " (the key)"
        elif isinstance(part, int) and parts[i + 1 : i + 2] != ["[key]"]:
            out += f"[{part}]"
        elif not re.fullmatch(r"[A-Za-z0-9_-]+", str(part)):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def flat_errors(errors: list[Any], prefix: tuple = ()) -> Iterator[tuple[str, Any]]:
    """(full key, error) of each error; key_error's `sub` is moved below the location it was
    raised at."""
    for e in errors:
        ctx = e.get("ctx") or {}
        yield path((*prefix, *e["loc"], *ctx.get("sub", ()))), e


def is_number(value: Any) -> bool:
    """Whether `value` is a string that reads as a number."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def problem_lines(err: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    """`<key>: <what is wrong>` of each error, the key its full path (below `prefix`)."""
    lines = []
    for key, e in flat_errors(err.errors(), prefix):
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against docs/configuration.md"
        quiet = e["type"] in ("missing", "extra_forbidden", "value_error", "config_key") or not e["loc"]
        got = "" if quiet else f" (got {e['input']!r})"
        if e["type"] in ("int_type", "float_type") and is_number(e.get("input")):
            got += "; a number in quotes is text, and so is YAML's 1e-3: write 1.0e-3"
        lines.append(f"{key}: {msg}{got}")
    return lines


def format_errors(err: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    """One line per bad key, each named by its full path (below `prefix`)."""
    return str(ConfigError.of(source, problem_lines(err, prefix)))
