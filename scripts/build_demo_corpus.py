"""Build the bundled demo corpus `lfr/assets/demo_corpus.jsonl.xz` from Debian packages.

Four domains of real English text with clear licences: the King James Bible (`kjv`, public
domain), the Python 3.11 documentation sources (`pydoc`, PSF License Version 2), the Jargon File
(`jargon`, public domain) and The Devil's Dictionary (`devil`, public domain). GCIDE (GPL) and
fortunes (unclear provenance) are left out on purpose. All of `jargon` and `devil` are kept,
plus a seeded sample of KJV chapters and Python documentation pages. The script also writes
`NOTICE.md` and `README.md` next to the corpus. The same packages and options give a
byte-identical file.

    python scripts/build_demo_corpus.py              # apt-get download, then dpkg-deb -x
    python scripts/build_demo_corpus.py --debs DIR   # .deb files downloaded elsewhere
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "lfr" / "assets" / "demo_corpus.jsonl.xz"
PACKAGES = ("bible-kjv", "bible-kjv-text", "python3.11-doc", "dict-jargon", "dict-devil")
DOMAINS = ("kjv", "pydoc", "jargon", "devil")
PYDOC_SOURCES = "python3.11-doc/usr/share/doc/python3.11/html/_sources"
DICTD = {
    "jargon": "dict-jargon/usr/share/dictd/jargon",
    "devil": "dict-devil/usr/share/dictd/devil",
}
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAX_DOC_BYTES = 60_000
MAX_XZ_BYTES = 5_000_000
XZ_PRESET = 9 | lzma.PRESET_EXTREME

Doc = dict[str, str]  # {"doc_id", "domain", "text"}


# --- text helpers -----------------------------------------------------------------------------


def normalise(text: str) -> str:
    """NFC, no trailing spaces, at most one blank line in a row, no outer blank lines."""
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def make_doc(doc_id: str, domain: str, text: str) -> Doc:
    return {"doc_id": f"{domain}/{doc_id}", "domain": domain, "text": normalise(text)}


# --- Debian packages --------------------------------------------------------------------------


def require(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        raise SystemExit(f"error: `{tool}` not found. {hint}")


def download(dest: Path) -> None:
    """`apt-get download` the packages into dest, running `apt-get update` only if needed."""
    require(
        "apt-get",
        f"On a Debian/Ubuntu machine run `apt-get download {' '.join(PACKAGES)}`"
        " and pass that folder with --debs DIR.",
    )
    cmd = ["apt-get", "download", *PACKAGES]
    if subprocess.run(cmd, cwd=dest, capture_output=True).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
    done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"error: {' '.join(cmd)} failed:\n{done.stderr.strip()}\n"
            "Download the packages elsewhere and pass --debs DIR."
        )


def find_deb(debs: Path, name: str) -> Path:
    found = sorted(debs.glob(f"{name}_*.deb"))
    if len(found) != 1:
        raise SystemExit(f"error: expected exactly one {name}_*.deb in {debs}, found {len(found)}")
    return found[0]


def extract(debs: Path, root: Path) -> dict[str, str]:
    """Unpack each package into root/<name> with `dpkg-deb -x`; return {name: version}."""
    require(
        "dpkg-deb",
        "It unpacks the .deb files: install `dpkg` (packaged on most Linux "
        "distributions and Homebrew), or build on Debian/Ubuntu; see --debs DIR.",
    )
    versions = {}
    for name in PACKAGES:
        deb = find_deb(debs, name)
        (root / name).mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / name)], check=True)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        )
        versions[name] = version.stdout.strip()
    return versions


# --- KJV ----------------------------------------------------------------------------------------


def kjv_text(root: Path) -> str:
    """The whole Bible as printed by `bible`; a huge -l keeps one verse per line (no COLUMNS)."""
    cmd = [
        str(root / "bible-kjv/usr/bin/bible"),
        "-l1000000",
        "-p",
        str(root / "bible-kjv-text/usr/lib"),
        "gen1:1-rev22:21",
    ]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def kjv_docs(root: Path) -> list[Doc]:
    """One document per chapter: its title ("Genesis 1"), a blank line, one verse per line."""
    chapters = re.split(r"^\n(\S[^\n]* \d+)\n\n", "\n" + kjv_text(root), flags=re.MULTILINE)
    if chapters[0].strip():
        raise SystemExit("error: unexpected text before Genesis 1 in the output of `bible`")
    docs = []
    for title, body in zip(chapters[1::2], chapters[2::2], strict=True):
        verses = re.findall(r"^ +\d+ (.*)$", body, flags=re.MULTILINE)
        if len(verses) != len(body.strip("\n").splitlines()):
            raise SystemExit(f"error: unexpected line in {title} in the output of `bible`")
        book, chapter = title.rsplit(" ", 1)
        doc_id = f"{book.lower().replace(' ', '')}/{chapter}"
        docs.append(make_doc(doc_id, "kjv", title + "\n\n" + "\n".join(verses)))
    return docs


# --- Python documentation -----------------------------------------------------------------------

ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}")


def is_adornment(line: str) -> bool:
    return ADORNMENT.fullmatch(line.rstrip("\n")) is not None


def title_start(lines: list[str], i: int) -> int | None:
    """First line of the section title whose text is lines[i], or None if it is not a title."""
    title, under = lines[i].rstrip(), lines[i + 1].rstrip()
    if not title.strip() or is_adornment(title) or not is_adornment(under):
        return None
    if i > 0 and lines[i - 1].rstrip() == under:  # overlined title, may be inset
        return i - 1
    fits = len(under) >= len(title) and not title[0].isspace()
    return i if fits and (i == 0 or not lines[i - 1].strip()) else None


def rst_sections(text: str) -> list[str]:
    """Split reST before each section title (with its overline, if any); lossless."""
    lines = text.splitlines(keepends=True)
    starts = {title_start(lines, i) for i in range(len(lines) - 1)} - {None}
    bounds = sorted({0, len(lines), *starts})
    return ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]


def paragraphs(text: str) -> list[str]:
    return re.findall(r".+?(?:\n\n+|\Z)", text, flags=re.DOTALL)


def text_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


SPLITTERS: tuple[Callable[[str], list[str]], ...] = (rst_sections, paragraphs, text_lines)


def pack(units: list[str], limit: int) -> list[str]:
    """Greedily join consecutive units into pieces of at most limit bytes."""
    pieces, current = [], ""
    for unit in units:
        if current and nbytes(current) + nbytes(unit) > limit:
            pieces.append(current)
            current = ""
        current += unit
    return [*pieces, current] if current else pieces


def split_text(text: str, limit: int, level: int = 0) -> list[str]:
    """Pieces of at most limit bytes, cut at section titles, else blank lines, else lines."""
    if nbytes(text) <= limit or level == len(SPLITTERS):
        return [text]
    units = [p for u in SPLITTERS[level](text) for p in split_text(u, limit, level + 1)]
    return pack(units, limit)


def pydoc_docs(root: Path) -> list[Doc]:
    """One document per .rst.txt file; files over MAX_DOC_BYTES become "<page>#1", "#2", ..."""
    src = root / PYDOC_SOURCES
    docs = []
    for path in sorted(src.rglob("*.rst.txt")):
        page = path.relative_to(src).as_posix().removesuffix(".rst.txt")
        pieces = split_text(path.read_text(encoding="utf-8"), MAX_DOC_BYTES)
        for i, piece in enumerate(pieces, 1):
            docs.append(make_doc(page if len(pieces) == 1 else f"{page}#{i}", "pydoc", piece))
    return docs


# --- dictd dictionaries -------------------------------------------------------------------------


def b64(value: str) -> int:
    """Decode a dictd index number (big-endian base 64)."""
    n = 0
    for ch in value:
        n = n * 64 + B64.index(ch)
    return n


def dictd_entries(base: Path) -> list[tuple[str, int, int]]:
    """(headword, offset, length) of the real entries, in order of offset."""
    entries = []
    for line in base.with_suffix(".index").read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.split("\t")
        if not headword.startswith(("00-database", "00database")):
            entries.append((headword, b64(offset), b64(length)))
    return sorted(entries, key=lambda e: (e[1], e[2], e[0]))


def dictd_docs(root: Path, domain: str) -> list[Doc]:
    """One document per distinct entry text. Index lines that point at the same text (aliases,
    entries printed twice) keep the first headword; distinct entries that share a headword
    (e.g. a noun and a verb) become "<headword>", "<headword>#2", ..."""
    base = root / DICTD[domain]
    data = gzip.decompress(base.with_suffix(".dict.dz").read_bytes())
    docs, seen_text, used_ids = [], set(), {}
    for headword, offset, length in dictd_entries(base):
        text = normalise(data[offset : offset + length].decode("utf-8"))
        if not text or text in seen_text:
            continue
        seen_text.add(text)
        used_ids[headword] = used_ids.get(headword, 0) + 1
        n = used_ids[headword]
        docs.append(make_doc(headword if n == 1 else f"{headword}#{n}", domain, text))
    return docs


# --- sampling and output ------------------------------------------------------------------------


def sample(docs: list[Doc], max_bytes: int, seed: int) -> list[Doc]:
    """A seeded sample of whole documents: shuffle (sorted input), keep each that still fits."""
    order = sorted(docs, key=lambda d: d["doc_id"])
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for doc in order:
        size = nbytes(doc["text"])
        if total + size <= max_bytes:
            out.append(doc)
            total += size
    return out


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode_corpus(docs: list[Doc]) -> tuple[bytes, bytes]:
    """(JSONL bytes, xz bytes) with documents sorted by doc_id."""
    jsonl = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    return jsonl, lzma.compress(jsonl, format=lzma.FORMAT_XZ, preset=XZ_PRESET)


def domain_stats(docs: list[Doc]) -> dict[str, tuple[int, int, int]]:
    """{domain: (documents, characters, UTF-8 bytes)}."""
    stats = {}
    for domain in DOMAINS:
        texts = [d["text"] for d in docs if d["domain"] == domain]
        stats[domain] = (len(texts), sum(map(len, texts)), sum(map(nbytes, texts)))
    return stats


# --- NOTICE.md and README.md --------------------------------------------------------------------

SOURCES = {
    "kjv": (
        "The King James Version of the Bible (1611): one document per chapter, verse "
        "numbers removed; a seeded sample of chapters",
        "`bible-kjv-text` {bible-kjv-text}, decoded at build time by `bible` from "
        "`bible-kjv` {bible-kjv}",
        "Bible Retrieval System (Chip Chapin, 1989; Debian: Matthew Vernon)",
        "text: public domain (the `bible` program is GPL-2+; it is only run, not shipped)",
    ),
    "pydoc": (
        "The Python 3.11 documentation, reStructuredText sources: one document per page, "
        "pages over 60 KB split at section titles; a seeded sample",
        "`python3.11-doc` {python3.11-doc}",
        "Python Software Foundation, docs.python.org",
        "PSF License Version 2 (see below)",
    ),
    "jargon": (
        "The Jargon File 4.4.7 (Eric S. Raymond et al., 2003): one document per entry",
        "`dict-jargon` {dict-jargon}",
        "Eric S. Raymond, http://catb.org/jargon/",
        "public domain",
    ),
    "devil": (
        "The Devil's Dictionary, Ambrose Bierce (1911; Internet Wiretap edition, 1993): "
        "one document per entry",
        "`dict-devil` {dict-devil}",
        "Internet Wiretap 1st Online Edition (1993)",
        "public domain",
    ),
}

NOTICE_TAIL = """\
**Python documentation.** The `pydoc` text is derived from the Python 3.11 documentation
(the reST sources shipped in `python3.11-doc`) and is distributed under the PSF License
Version 2 (https://docs.python.org/3.11/license.html):

> Copyright © 2001-2023 Python Software Foundation; All Rights Reserved

The sources also carry: Copyright © 2000 BeOpen.com; Copyright © 1995-2000 Corporation for
National Research Initiatives; Copyright © 1991-1995 Stichting Mathematisch Centrum. All rights
reserved. Changes made (PSF License, clause 3): trailing whitespace removed, runs of blank lines
collapsed, pages over 60 KB split into several documents at section titles (or at blank lines
inside a longer section), and only a seeded
sample of the pages kept.

**King James Bible.** The text is out of copyright (it remains under Crown letters patent in the
United Kingdom only). The data file of `bible-kjv-text` comes with this legend, reproduced as a
courtesy: "Bible Retrieval System, Chip Chapin, Hewlett Packard Company, 1989. This file is
provided for unrestricted use provided that this legend is included on all tape media and as a
part of the software program in whole or part. Users may copy, modify or distribute this file
at will."

**Jargon File.** Public domain; its authors ask for citation as "Jargon File 4.4.7".

**The Devil's Dictionary.** Ambrose Bierce, 1911 (Albert and Charles Boni); public domain,
copyright expired.

**Left out on purpose.** GCIDE (GPL-2+, which would bind the bundled file) and the `fortunes`
collections (unclear provenance and copyright of the individual quotations).
"""


def stats_table(stats: dict[str, tuple[int, int, int]], what: dict[str, str]) -> str:
    rows = [
        "| domain | documents | MB of text (UTF-8) | characters | " + what["_"] + " |",
        "|---|---:|---:|---:|---|",
    ]
    for domain, (n, chars, size) in stats.items():
        rows.append(f"| `{domain}` | {n:,} | {size / 1e6:.2f} | {chars:,} | {what[domain]} |")
    n, chars, size = (sum(col) for col in zip(*stats.values(), strict=True))
    rows.append(f"| total | {n:,} | {size / 1e6:.2f} | {chars:,} | |")
    return "\n".join(rows)


def fill_versions(template: str, versions: dict[str, str]) -> str:
    """Replace each "{package}" in template by that package's version."""
    return re.sub(r"\{([\w.+-]+)\}", lambda m: versions[m[1]], template)


def render_notice(versions: dict[str, str], stats: dict, command: str, sums: dict) -> str:
    rows = [
        "| domain | source | Debian package (version) | upstream | licence |",
        "|---|---|---|---|---|",
    ]
    for domain, (source, package, upstream, licence) in SOURCES.items():
        deb = fill_versions(package, versions)
        rows.append(f"| `{domain}` | {source} | {deb} | {upstream} | {licence} |")
    what = {"_": "licence", **{d: SOURCES[d][3].split(" (")[0] for d in DOMAINS}}
    return (
        "# Bundled demo corpus: sources and licences\n\n"
        "`demo_corpus.jsonl.xz` is built from Debian packages by `scripts/build_demo_corpus.py`"
        ", which also writes this file. It was rebuilt with\n\n"
        f"```sh\n{command}\n```\n\n"
        "The same package versions give the same file (`--debs DIR` or `apt-get download`"
        f"). sha256 of `demo_corpus.jsonl.xz`: `{sums['xz']}`; of the decompressed JSONL "
        f"(independent of the xz library version): `{sums['jsonl']}`."
        "\n\n## Sources\n\n"
        + "\n".join(rows)
        + "\n\n## Contents of the bundled file\n\n"
        + stats_table(stats, what)
        + "\n\n## Licence notes\n\n"
        + NOTICE_TAIL
    )


def render_readme(stats: dict, command: str, xz_size: int, example: Doc) -> str:
    what = {
        "_": "what",
        "kjv": "King James Bible chapters (archaic narrative prose)",
        "pydoc": "Python 3.11 documentation pages (technical prose, reST markup, code)",
        "jargon": "Jargon File entries (informal hacker slang, anecdotes)",
        "devil": "The Devil's Dictionary entries (satirical definitions, verse)",
    }
    total = sum(s[2] for s in stats.values())
    example = {**example, "text": example["text"][:70] + "..."}
    return (
        "# Bundled assets\n\n"
        f"`demo_corpus.jsonl.xz` ({xz_size / 1e6:.2f} MB; {total / 1e6:.2f} MB of UTF-8 text, NFC)"
        " is a small, offline corpus of four real-text domains for the demo runs"
        " (`corpus.source: bundled`). Sources and licences: [NOTICE.md](NOTICE.md).\n\n"
        "Schema: xz-compressed JSON Lines, one document per line, sorted by `doc_id`:\n\n"
        f"```json\n{json.dumps(example, ensure_ascii=False)}\n```\n\n"
        "`doc_id` is `<domain>/<id>`: `kjv/<book>/<chapter>`, `pydoc/<page>` or "
        "`pydoc/<page>#<part>` (pages over 60 KB are split at section titles, or at blank "
        "lines where one section is longer), "
        "`jargon/<headword>`, `devil/<headword>` (`#2` for a second entry under one headword)."
        "\n\n" + stats_table(stats, what) + "\n\n"
        f"Rebuild (needs `apt-get` and `dpkg-deb`, or `--debs DIR` with the .deb files):\n\n"
        f"```sh\n{command}\n```\n\n"
        "This file and NOTICE.md are written by the build script.\n"
    )


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--debs", type=Path, help="folder with the .deb files (default: apt-get download)"
    )
    p.add_argument("--kjv-mb", type=float, default=2.5, help="MB of KJV chapters (%(default)s)")
    p.add_argument("--pydoc-mb", type=float, default=3.5, help="MB of Python docs (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (%(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output file; NOTICE.md and README.md are written next to it",
    )
    return p.parse_args()


def collect(root: Path, args: argparse.Namespace) -> list[Doc]:
    docs = (
        sample(kjv_docs(root), round(args.kjv_mb * 1e6), args.seed)
        + sample(pydoc_docs(root), round(args.pydoc_mb * 1e6), args.seed)
        + dictd_docs(root, "jargon")
        + dictd_docs(root, "devil")
    )
    docs = sorted((d for d in docs if d["text"].strip()), key=lambda d: d["doc_id"])
    ids = [d["doc_id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise SystemExit("error: duplicate doc_id in the corpus")
    return docs


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="demo_corpus_") as tmp:
        debs = args.debs
        if debs is None:
            debs = Path(tmp) / "debs"
            debs.mkdir()
            download(debs)
        versions = extract(debs, Path(tmp) / "x")
        docs = collect(Path(tmp) / "x", args)
    jsonl, xz = encode_corpus(docs)
    if len(xz) > MAX_XZ_BYTES:
        raise SystemExit(f"error: {len(xz):,} bytes compressed, over {MAX_XZ_BYTES:,}; sample less")
    write_atomic(args.out, xz)
    stats = domain_stats(docs)
    sums = {"xz": hashlib.sha256(xz).hexdigest(), "jsonl": hashlib.sha256(jsonl).hexdigest()}
    command = (
        f"python scripts/build_demo_corpus.py --kjv-mb {args.kjv_mb:g} "
        f"--pydoc-mb {args.pydoc_mb:g} --seed {args.seed}"
    )
    write_atomic(
        args.out.parent / "NOTICE.md", render_notice(versions, stats, command, sums).encode("utf-8")
    )
    write_atomic(
        args.out.parent / "README.md",
        render_readme(stats, command, len(xz), docs[0]).encode("utf-8"),
    )
    print(f"wrote {args.out}: {len(xz):,} bytes, sha256 {sums['xz']}")
    for domain, (n, chars, size) in stats.items():
        print(f"  {domain:7s} {n:6,} docs {chars:10,} chars {size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
