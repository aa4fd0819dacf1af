"""Reading a config: a YAML file, and Snakemake's `--config KEY=VALUE` overrides merged into it.

Both give the raw mapping that lfr/grid.py's `validate_config` checks against lfr/config.py's
schema; the overrides are first typed as a config file would give them (`typed_overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lfr.config import ConfigError
from lfr.schema import json_schema


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a config file (an empty file: no keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return raw


def _branch(schema: dict[str, Any], value: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The part of a JSON Schema node that applies to `value`: $ref resolved, and of an anyOf
    the option of the value's kind (a mapping: object, a list: array); a scalar gets the node."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    kind = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
    for option in schema.get("anyOf", []):
        option = _branch(option, None, defs)  # resolves a $ref
        if kind and option.get("type") == kind:
            return _branch(option, value, defs)
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """JSON types a node allows (empty: any value, e.g. a method's options)."""
    return {t for t in [schema.get("type"), *(o.get("type") for o in schema.get("anyOf", []))] if t}


def _typed(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    schema = _branch(schema, value, defs)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", {})
        return {k: _typed(v, props.get(k, extra if isinstance(extra, dict) else {}), defs)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items", {}), defs) for v in value]
    if not isinstance(value, str) or "string" in _types(schema):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # left for the validation to name
    if isinstance(parsed, str) and "number" in _types(schema):
        try:  # JSON's 3e-4 is a string to YAML 1.1
            return float(value)
        except ValueError:
            pass
    return parsed


def typed_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Command-line overrides (Snakemake's --config) as a config file would give them.

    Snakemake reads every leaf of a --config value as a string (`seeds=[0,1]` gives ['0', '1']),
    which the JSON Schema then rejects; each string where the config expects no string is read
    as YAML (which covers JSON), so it validates like the same value from a file."""
    schema = json_schema()
    return _typed(dict(overrides), schema, schema.get("$defs", {}))


def merge_config(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge overrides into config in place: mappings key by key, anything else replaced."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_config(config[key], value)
        else:
            config[key] = value
