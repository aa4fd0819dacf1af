"""Stage `schema`: the config's schema as JSON Schema, or as the reference page docs/configuration.md.

Both are generated from the pydantic models of lfr/config.py and the option models of the
methods (lfr/sampling/), whose field docstrings are each key's one description; `make schema`
writes them, and tests/test_config.py fails when a committed file differs from what this prints.
"""

from __future__ import annotations

import argparse
import inspect
import json
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lfr.config import MODEL_PRESETS, ExperimentConfig
from lfr.sampling import SAMPLERS


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the whole config (workflow/schemas/config.schema.json)."""
    schema = ExperimentConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# -- the reference page -----------------------------------------------------------------------------
INTRO = """\
# Configuration reference

<!-- Generated from the docstrings of lfr/config.py and of the methods' options (lfr/sampling/)
by `make schema` (python -m lfr schema --format markdown). Edit those, not this page. -->

Every key of an experiment config, one table per section: its type with its bounds, its default,
and what it means. A config file (the ones in `config/`, described in `config/README.md`) gives
only the keys it changes; the others take the defaults below. Snakemake's `--config KEY=VALUE`
changes single keys on the command line (a YAML value, checked like the same value in a file; a
mapping merges into its section).

The whole config is checked before any job runs, and each problem is named by its key
(`train.lr: ...`). Unknown keys are errors, and so are numbers in quotes, `.inf` and `.nan`
(YAML reads `1e-3` as text: write `1.0e-3`). Method names, each method's options, lm-eval's task
names and the checks across keys are lfr/grid.py's; the same schema as JSON Schema is
`workflow/schemas/config.schema.json`.
"""

NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", Any: "any"}
BOUNDS = [(at.Gt, "gt", "above {}"), (at.Ge, "ge", "at least {}"), (at.Lt, "lt", "below {}"),
          (at.Le, "le", "at most {}"), (at.MinLen, "min_length", "at least {} item(s)"),
          (at.MaxLen, "max_length", "at most {} item(s)")]


def bounds(metadata: list[Any]) -> list[str]:
    """The constraints of a field's metadata as words: `above 0`, `each once`, `not empty`."""
    words = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            words += bounds(m.metadata)
            if isinstance(m.json_schema_extra, dict) and m.json_schema_extra.get("uniqueItems"):
                words.append("each once")
        for kind, attr, text in BOUNDS:
            if isinstance(m, kind):
                words.append(text.format(number(getattr(m, attr))).replace("at least 1 item(s)", "not empty"))
        if getattr(m, "pattern", None):
            words.append(f"matching `{m.pattern}`")
    return words


def number(value: float) -> str:
    """A bound as written in a config: 4294967295, 1000000, 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def type_text(tp: Any) -> str:
    """An annotation in words: `number (above 0, at most 1)`, `list of string`, `` `bpe` or `gpt2` ``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        more = bounds(list(args[1:]))
        return type_text(args[0]) + (f" ({', '.join(more)})" if more else "")
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        kinds = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(kinds + ["null"] * (type(None) in args))
    if origin in (list, tuple):
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return "section"
    return NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "(below)"
    value = list(field.default) if isinstance(field.default, tuple) else field.default
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return f"`{text.strip().removesuffix('...').strip()}`"  # a scalar's dump ends the document


def cell(text: str | None) -> str:
    """A docstring as one table cell: its lines joined, `|` escaped, and outside `code` the
    characters that Markdown would read as HTML or emphasis (`results/<name>/`, `lr * ratio`)."""
    parts = " ".join((text or "").split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(parts)


def models_below(tp: Any, key: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """(key path, model) of each section that the annotation `tp` of key `key` holds: a model
    itself, a model in a list (`key[]`), a model as a mapping's value (`key.<name>`)."""
    origin, args = get_origin(tp), get_args(tp)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        yield key, tp
    elif origin is dict:
        placeholder = {"custom_models": "<size>", "resources": "<size>"}.get(key.rsplit(".")[-1], "<name>")
        yield from models_below(args[1], f"{key}.{placeholder}")
    elif origin in (list, tuple):
        yield from models_below(args[0], f"{key}[]")
    else:
        for arg in args:
            yield from models_below(arg, key)


def sections(model: type[BaseModel], key: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """(key path, model) of `model` and of every section below it, in the order of the fields."""
    yield key, model
    for name, field in model.model_fields.items():
        for below, sub in models_below(field.annotation, f"{key}.{name}" if key else name):
            yield from sections(sub, below)


QUIET = ("Left out of job params and run hashes while at its default: runs made before the key "
         "existed are not retrained.")


def table(model: type[BaseModel], key: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        if more := bounds([*field.metadata, FieldInfo(json_schema_extra=field.json_schema_extra)]):
            kind += f" ({', '.join(more)})"
        meaning = f"{field.description} {QUIET if name in getattr(model, 'QUIET', ()) else ''}"
        rows.append(f"| `{f'{key}.{name}' if key else name}` | {cell(kind)} | {cell(default_text(field))} "
                    f"| {cell(meaning)} |")
    return rows


def section_text(model: type[BaseModel], key: str, heading: str, note: str = "") -> list[str]:
    doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")
    return [heading, "", *([cell(doc), ""] if doc else []), *([note, ""] if note else []),
            *table(model, key), ""]


def presets_text() -> list[str]:
    """The sizes that `models` may name besides `custom_models`'."""
    rows = ["| size | arch | n_layer | n_head | n_embd |", "|---|---|---|---|---|"]
    rows += [f"| `{name}` | {p.arch} | {p.n_layer} | {p.n_head} | {p.n_embd} |"
             for name, p in MODEL_PRESETS.items()]
    return ["## Model sizes", "", "The sizes that `models` (and a `reference_size`) may name, besides the "
            "names of `custom_models`; their other keys take the defaults of `custom_models.<size>`.",
            "", *rows, ""]


def reference_page() -> str:
    """docs/configuration.md: every key of the config and of each method's options."""
    lines = [INTRO]
    for key, model in sections(ExperimentConfig, ""):
        lines += section_text(model, key, f"## `{key}`" if key else "## Top level")
    lines += presets_text()
    methods: dict[type[BaseModel], list[str]] = {}
    for name, sampler in SAMPLERS.items():
        methods.setdefault(sampler.Options, []).append(name)
    lines += ["## Options of each method (`method_options`)", "",
              "`method_options.<method>` holds the options of one method of `methods`, e.g. "
              "`{lfr: {preset: paper-v1}}`; each method validates its own (unknown keys are errors).", ""]
    for options, names in methods.items():
        modules = sorted({SAMPLERS[n].__module__.replace(".", "/") + ".py" for n in names})
        listed = ", ".join(f"`{n}`" for n in names)
        note = f"{'Methods' if len(names) > 1 else 'Method'} {listed} ({', '.join(modules)})."
        for key, model in sections(options, f"method_options.{names[0]}"):
            also = f" (and {', '.join(f'`{n}`' for n in names[1:])})" if len(names) > 1 else ""
            top = model is options
            lines += section_text(model, key, f"### `{key}`" + (also if top else ""), note if top else "")
    return "\n".join(lines).rstrip("\n") + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["json", "markdown"], default="json",
                        help="json: the JSON Schema (workflow/schemas/config.schema.json); markdown: "
                        "the reference page (docs/configuration.md)")


def main(format: str = "json") -> str:
    """The `schema` stage."""
    return json.dumps(json_schema(), indent=2) if format == "json" else reference_page().rstrip("\n")
