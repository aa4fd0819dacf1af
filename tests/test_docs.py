"""Every shell command the docs print works as printed, so the docs cannot drift from the code.

The docs: README.md, every page under docs/ (and every page of mkdocs.yml's nav), config/README.md
and the results/ READMEs. The site builds strictly (no broken link or anchor, no page left out of
the nav), no table row is copied from one page into another, and each measured figure the README
quotes is one of the dated results of docs/results.md.

Commands come from the ```bash blocks (every line) and from inline `code` that starts with
snakemake, make, python -m lfr, python -m benchmarks or lm_eval. Each runs from the repository
root with outputs in a temporary folder, and only as far as it can without side effects:

- snakemake: as printed plus `-n -d TMP` (a dry run; `--lint` and `--unlock` run as printed,
  `--report` plans the jobs whose outputs the report needs), through Snakemake's command line in
  this process (in a process of its own only to show why one failed); without `-n` it must say
  `--cores` or name a profile, as Snakemake requires for local execution;
- make TARGET: `make -n TARGET` (the target exists), then each snakemake or benchmark command
  of its recipe as above (`make test` would run this suite: its recipe is only printed);
- python -m lfr STAGE: `--help` (a bare STAGE names a stage: it must exist);
- python -m benchmarks, benchmarks/*.py, scripts/*.py, lm_eval: the program's own argument parser
  reads the arguments, and the program stops there (they time, evaluate or train for minutes);
  ours in this process, lm_eval in its own;
- `cd DIR`: DIR is a folder the workflow writes (a dry run of it as a target);
- export: sets the variables for the rest of its block;
- source .venv/bin/activate: the venv that make creates, the one this suite runs in.

Placeholders map to real values: `my.yaml` to a small unnamed config, `DIR` to a fresh folder,
`<stage>` to every stage. A command that needs the network ends with the comment
`# needs network` and is skipped by name, except `pip install`, whose files are read instead:
each one exists, and every torch it asks for admits a cluster's CUDA build (it keeps that torch).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE_LEFTOVERS, pip_requirements, snakemake_in_process


def nav_pages(nav: list) -> list[str]:
    """The files of mkdocs.yml's nav (nested sections included), relative to docs/."""
    pages: list[str] = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


MKDOCS = yaml.safe_load((REPO / "mkdocs.yml").read_text())
SITE_PAGES = sorted({p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")}
                    | {f"docs/{page}" for page in nav_pages(MKDOCS["nav"])})
DOCS = ["README.md", *SITE_PAGES, "config/README.md", "results/README.md", "results/tables/README.md"]
PREFIXES = ("snakemake", "make", "python -m lfr", "python -m benchmarks", "python -m benchmarks.ladder",
            "lm_eval")
NETWORK = "needs network"
CLUSTER_TORCH = "2.6.0+cu124"  # a CUDA build of torch that a cluster's environment may have
# Placeholders the cluster section's `export` would set; dummies are enough for a dry run.
CLUSTER_ENV = {"LFR_SLURM_ACCOUNT": "dummy", "LFR_CPU_PARTITION": "cpu", "LFR_GPU_PARTITION": "gpu"}
# Runs a Python program until its argument parser has read the arguments (exit 2 on bad ones).
PARSE_ONLY = """
import argparse, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_then_stop(self, *a, **k):
    parse(self, *a, **k)
    sys.exit(0)
argparse.ArgumentParser.parse_args = parse_then_stop
sys.argv = sys.argv[1:]
if sys.argv[0] == "-m":
    sys.argv.pop(0)
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass(frozen=True)
class Command:
    doc: str
    text: str  # as printed: continuations joined, the comment removed
    network: bool = False
    env: tuple[tuple[str, str], ...] = ()  # from the block's `export` lines above it


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line: `#` starts a comment at a word start, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1:].strip()
    return line.strip(), ""


def doc_commands() -> list[Command]:
    found: list[Command] = []
    fence = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in fence.finditer(text):
            if block[2] != "bash":
                continue
            env: dict[str, str] = {}
            for line in textwrap.dedent(block[3]).replace("\\\n", " ").splitlines():
                code, comment = split_comment(line)
                if not code:
                    continue
                found.append(Command(doc, " ".join(code.split()), NETWORK in comment,
                                     tuple(env.items())))
                if code.startswith("export "):
                    env |= dict(w.split("=", 1) for w in shlex.split(code)[1:])
        prose = fence.sub("", text)
        for span in re.findall(r"`([^`]+)`", prose):  # inline code may wrap onto the next line
            code, comment = split_comment(" ".join(span.split()))
            if any(code == p or code.startswith(p + " ") for p in PREFIXES):
                found.append(Command(doc, code, NETWORK in comment))
    return found


def stages() -> list[str]:
    from lfr.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def expanded() -> list[Command]:
    """The commands with `<stage>` expanded and a bare `python -m lfr STAGE` given --help; each
    distinct command once (the first doc that prints it names it)."""
    out: dict[tuple[str, tuple], Command] = {}
    for cmd in doc_commands():
        texts = [cmd.text.replace("<stage>", s) for s in stages()] if "<stage>" in cmd.text else [cmd.text]
        for text in texts:
            if re.fullmatch(r"python -m lfr [\w-]+", text):
                text += " --help"
            out.setdefault((text, cmd.env), Command(cmd.doc, text, cmd.network, cmd.env))
    return list(out.values())


COMMANDS = expanded()


def small_config(tmp: Path) -> Path:
    """`my.yaml`: the smoke config without its name, so its tables go to results/tables."""
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg.pop("name")
    (tmp / "my.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "my.yaml"


def run(argv: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, **CLUSTER_ENV, **env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def check(r: subprocess.CompletedProcess, what: str) -> None:
    assert r.returncode == 0, f"{what}\nexit {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}"


def argv_of(text: str) -> tuple[list[str], dict[str, str]]:
    """Words of a command, its leading VAR=value words apart, `.venv/bin/` the running venv's."""
    words, env = shlex.split(text), {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if ">" in words:  # a redirect (make schema) is not run
        words = words[:words.index(">")]
    words[0] = re.sub(r"^\.venv/bin/", "", words[0])
    return words, env


def link_corpus_files(config: str, tmp: Path) -> None:
    """A shipped config's relative corpus paths are read from the working folder, the repository
    root when a command runs as printed: the same files from the test's working folder `tmp`."""
    raw = yaml.safe_load((REPO / config).read_text()) if (REPO / config).is_file() else {}
    for path in (raw.get("corpus") or {}).get("paths", []):
        top = Path(path).parts[0]
        if not Path(path).is_absolute() and not (tmp / top).exists():
            (tmp / top).symlink_to(REPO / top)


def run_snakemake(words: list[str], env: dict[str, str], tmp: Path, what: str) -> None:
    args = [str(small_config(tmp)) if w == "my.yaml" else str(tmp / "DIR") if w == "DIR" else w
            for w in words[1:]]
    for i, word in enumerate(args[:-1]):
        if word == "--configfile":
            link_corpus_files(args[i + 1], tmp)
    if "--report" in args:  # the report needs finished outputs: plan them
        i = args.index("--report")
        del args[i:i + 2]
    dry = "-n" in args or "--dry-run" in args
    if not (dry or {"--lint", "--unlock"} & set(args)):
        assert {"--cores", "-c", "--jobs", "-j", "--workflow-profile", "--profile"} & set(args) or \
            "--report" in words, f"{what}\nsnakemake needs --cores N (or a profile) to run jobs"
    if not {"--lint", "--unlock", "-n"} & set(args):
        args.append("-n")
    if not {"--directory", "-d"} & set(args):
        args += ["-d", str(tmp)]
    argv = ["-s", str(REPO / "Snakefile"), *args]
    snakemake_in_process(argv, {**CLUSTER_ENV, **env}, what)


def parse_in_process(args: list[str], what: str) -> None:
    """PARSE_ONLY in this process: run the program (`-m MODULE ARGS`: its `__main__.main(ARGS)`;
    `FILE ARGS`: the file as a script) until its argument parser has read the arguments."""
    import importlib
    import runpy
    from unittest import mock

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        parse(self, *a, **k)
        raise SystemExit(0)

    module = args[0] == "-m"
    argv = args[1:] if module else args
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
            mock.patch.object(sys, "argv", list(argv)), pytest.raises(SystemExit) as stop:
        if module:  # a package runs its __main__, a module its own main
            name = f"{argv[0]}.__main__" if argv[0] == "benchmarks" else argv[0]
            importlib.import_module(name).main(argv[1:])
        else:
            runpy.run_path(str(REPO / argv[0]), run_name="__main__")
    assert stop.value.code in (0, None), f"{what}\nexit {stop.value.code}"


def run_words(words: list[str], env: dict[str, str], tmp: Path, what: str) -> None:
    prog = " ".join(words[:3])
    if words[0] == "snakemake":
        run_snakemake(words, env, tmp, what)
    elif words[0] == "make":
        r = run(["make", "-n", *words[1:]], env)
        check(r, what)
        for line in r.stdout.replace("\\\n", " ").splitlines():
            sub, sub_env = argv_of(line)
            if sub[0] == "snakemake" or sub[:3] == ["python", "-m", "benchmarks"]:
                run_words(sub, env | sub_env, tmp, f"{what}\n  recipe: {line}")
    elif prog == "python -m lfr":
        assert "--help" in words, f"{what}\nonly `python -m lfr STAGE --help` runs without data"
        from lfr.cli import main  # in this process: a stage's module imports torch, here already

        with pytest.raises(SystemExit) as stop:
            main(words[3:])
        assert stop.value.code == 0, f"{what}\nexit {stop.value.code}"
    elif prog.startswith("python -m benchmarks") or (
            words[0] == "python" and words[1].startswith(("benchmarks/", "scripts/"))):
        parse_in_process(words[1:], what)  # our programs: torch is imported here already
    elif words[0] == "lm_eval":
        check(run([sys.executable, "-c", PARSE_ONLY, "-m", "lm_eval", *words[1:]], env), what)
    elif words[0] == "cd":
        run_snakemake(["snakemake", "--cores", "1", words[1]], env, tmp, what)
    elif words[0] == "export":
        assert all(re.fullmatch(r"\w+=\S+", w) for w in words[1:]), what
    elif words[0] == "source":  # make's venv is the one running this suite, so it is active here
        venv = re.search(r"^VENV := (\S+)$", (REPO / "Makefile").read_text(), re.M)
        assert venv and words[1:] == [f"{venv[1]}/bin/activate"], f"{what}\nnot make's venv"
    else:
        pytest.fail(f"{what}\nno rule to run this command; add one to tests/test_docs.py")


def test_the_docs_show_commands():
    texts = {c.text for c in COMMANDS}
    assert len(COMMANDS) >= 20
    assert {"snakemake --cores all results/tables/main.csv", "make demo", "make test"} <= texts
    assert ("snakemake --workflow-profile workflow/profiles/slurm results/paper/tables/main.csv "
            "--configfile config/paper.yaml") in texts  # a `\` continuation, joined
    assert {c.text for c in COMMANDS if c.network} >= {"pip install -r requirements.txt -e ."}
    assert split_comment("a '#b' \"#c\" d#e # f") == ("a '#b' \"#c\" d#e", "f")


@SNAKEMAKE_LEFTOVERS
@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"{c.doc}: {c.text}")
def test_a_printed_command_works_as_printed(cmd, tmp_path):
    words, env = argv_of(cmd.text)
    if cmd.network and words[:2] == ["pip", "install"]:
        torch = [r for r in pip_requirements(words[2:]) if r.name == "torch"]
        assert torch and all(r.specifier.contains(CLUSTER_TORCH) for r in torch), (cmd.text, torch)
        return
    if cmd.network:
        pytest.skip(f"{NETWORK}: {cmd.text}")
    run_words(words, dict(cmd.env) | env, tmp_path, f"{cmd.doc}: {cmd.text}")


def test_the_site_builds_strictly(tmp_path):
    """mkdocs.yml's site: a broken link or anchor, or a page under docs/ left out of the nav,
    fails the build (its `validation` settings, warnings as errors)."""
    r = run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
             "-d", str(tmp_path / "site")], {})
    check(r, "mkdocs build --strict")
    assert (tmp_path / "site/index.html").is_file() and (tmp_path / "site/results/index.html").is_file()


def table_rows(text: str) -> list[str]:
    """The body rows of a doc's Markdown tables (the rows after a `|---|` line), spaces folded."""
    rows, body = [], False
    for line in text.splitlines():
        line = " ".join(line.split())
        body = line.startswith("|") and (body or re.fullmatch(r"\|( ?:?-+:? ?\|)+", line) is not None)
        if body and not line.startswith("|-"):
            rows.append(line)
    return rows


def test_no_table_row_is_copied_between_pages():
    """A table has one home: a measured result or a definition copied by hand into a second page
    drifts from the first. (The `duplicates` tool reads code, not Markdown.)"""
    homes: dict[str, list[str]] = {}
    for doc in DOCS:
        for row in dict.fromkeys(table_rows((REPO / doc).read_text())):
            homes.setdefault(row, []).append(doc)
    assert {row: docs for row, docs in homes.items() if len(docs) > 1} == {}
    assert table_rows("| a | b |\n|---|---|\n| 1 | 2 |\n\ntext\n") == ["| 1 | 2 |"]


def test_the_readmes_figures_are_dated_results():
    """Each figure with an interval that the README puts in bold is one of docs/results.md's
    dated measurements, so the front door cannot drift from them."""
    readme, results = (REPO / "README.md").read_text(), (REPO / "docs/results.md").read_text()
    figures = re.findall(r"\*\*(-?[\d.]+)x? (\[-?[\d.]+, -?[\d.]+\])\*\*", readme)
    assert len(figures) >= 2  # the demo's speed-up, the ladder's slope
    for value, interval in figures:
        assert re.search(rf"{re.escape(value)}x? {re.escape(interval)}", results), (value, interval)
