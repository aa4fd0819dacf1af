"""Rebuild the bundled demo corpus (lfr/assets/demo_corpus.jsonl.xz) from Debian packages.

Four domains of real English text with clear licences: the KJV Bible (public domain), the
Python 3.11 documentation sources (PSF License), the Jargon File (public domain) and The Devil's
Dictionary (public domain). GCIDE (GPL) and fortunes (mixed provenance) are left out on purpose.
Deterministic: the same packages give a byte-identical file.

    python scripts/build_demo_corpus.py              # apt-get download + dpkg-deb -x (Debian)
    python scripts/build_demo_corpus.py --debs DIR   # use .deb files downloaded elsewhere
"""

from __future__ import annotations

import argparse
import gzip
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
from pathlib import Path

PACKAGES = ["bible-kjv", "bible-kjv-text", "python3.11-doc", "dict-jargon", "dict-devil"]
OUT = Path(__file__).resolve().parent.parent / "lfr" / "assets" / "demo_corpus.jsonl.xz"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAX_DOC_CHARS = 60_000


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def fetch_debs(dest: Path) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: download {', '.join(PACKAGES)} elsewhere "
                             "and pass --debs DIR")
    cmd = ["apt-get", "download", *PACKAGES]
    if subprocess.run(cmd, cwd=dest).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(cmd, cwd=dest, check=True)


def extract(debs: Path, root: Path) -> dict[str, str]:
    """Unpack each package into root/<name>; return {name: version}."""
    versions = {}
    for name in PACKAGES:
        (deb,) = sorted(debs.glob(f"{name}_*.deb"))
        (root / name).mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / name)], check=True)
        versions[name] = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                        capture_output=True, text=True).stdout.strip()
    return versions


def kjv_docs(root: Path) -> list[dict]:
    """One document per chapter: a "Book N" title, then one verse per line (numbers removed)."""
    out = subprocess.run([str(root / "bible-kjv/usr/bin/bible"), "-p", str(root / "bible-kjv-text/usr/lib"),
                          "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    docs, title, verses = [], None, []
    for i, line in enumerate(lines):
        is_header = (re.fullmatch(r"\S.* \d+", line) and (i == 0 or not lines[i - 1].strip())
                     and (i + 1 == len(lines) or not lines[i + 1].strip()))
        if is_header:
            if title:
                docs.append((title, verses))
            title, verses = line, []
        elif re.match(r"\s+\d+ ", line):
            verses.append(re.sub(r"^\s+\d+ ", "", line))
        elif line.strip() and verses:
            verses[-1] += " " + line.strip()
    docs.append((title, verses))
    return [{"doc_id": f"kjv/{t.lower().replace(' ', '')}", "domain": "kjv",
             "text": normalise(t + "\n\n" + "\n".join(v))} for t, v in docs]


def pack(sections: list[str]) -> list[str]:
    """Greedily join consecutive sections into pieces of at most MAX_DOC_CHARS."""
    pieces, current = [], ""
    for section in sections:
        if current and len(current) + len(section) > MAX_DOC_CHARS:
            pieces.append(current)
            current = ""
        current += section
    return [*pieces, current] if current else pieces


def rst_sections(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    underline = re.compile(r"([=\-*~^#+])\1{3,}\s*")
    starts = [i - 1 for i in range(1, len(lines)) if underline.fullmatch(lines[i])
              and lines[i - 1].strip() and not underline.fullmatch(lines[i - 1])]
    bounds = sorted({0, *starts, len(lines)})
    return ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]


def pydoc_docs(root: Path) -> list[dict]:
    src = root / "python3.11-doc/usr/share/doc/python3.11/html/_sources"
    docs = []
    for path in sorted(src.rglob("*.rst.txt")):
        name = path.relative_to(src).as_posix().removesuffix(".rst.txt")
        text = path.read_text(encoding="utf-8")
        pieces = [text] if len(text) <= MAX_DOC_CHARS else pack(rst_sections(text))
        for i, piece in enumerate(pieces):
            doc_id = f"pydoc/{name}" + (f"#{i}" if len(pieces) > 1 else "")
            docs.append({"doc_id": doc_id, "domain": "pydoc", "text": normalise(piece)})
    return docs


def b64(value: str) -> int:
    n = 0
    for ch in value:
        n = n * 64 + B64.index(ch)
    return n


def dictd_docs(dict_dz: Path, domain: str) -> list[dict]:
    data = gzip.decompress(dict_dz.read_bytes())
    docs = {}
    for line in dict_dz.with_suffix("").with_suffix(".index").read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.split("\t")
        if headword.startswith(("00-database", "00database")):
            continue
        start = b64(offset)
        text = data[start : start + b64(length)].decode("utf-8")
        docs.setdefault(f"{domain}/{headword}", text)  # a headword listed twice keeps its first entry
    return [{"doc_id": k, "domain": domain, "text": normalise(v)} for k, v in docs.items()]


def sample(docs: list[dict], max_chars: int, seed: int = 0) -> list[dict]:
    """A seeded sample of whole documents totalling at most max_chars."""
    order = sorted(docs, key=lambda d: d["doc_id"])
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for doc in order:
        if total + len(doc["text"]) <= max_chars:
            out.append(doc)
            total += len(doc["text"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--debs", type=Path, help="folder with the .deb files (default: apt-get download)")
    p.add_argument("--kjv-chars", type=int, default=2_500_000)
    p.add_argument("--pydoc-chars", type=int, default=3_500_000)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        debs = args.debs or tmp / "debs"
        if args.debs is None:
            debs.mkdir()
            fetch_debs(debs)
        versions = extract(debs, tmp / "x")
        x = tmp / "x"
        docs = (sample(kjv_docs(x), args.kjv_chars) + sample(pydoc_docs(x), args.pydoc_chars)
                + dictd_docs(x / "dict-jargon/usr/share/dictd/jargon.dict.dz", "jargon")
                + dictd_docs(x / "dict-devil/usr/share/dictd/devil.dict.dz", "devil"))
    docs = sorted((d for d in docs if d["text"]), key=lambda d: d["doc_id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    with lzma.open(tmp_out, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB compressed); packages: {versions}")
    for domain in sorted({d["domain"] for d in docs}):
        sub = [d for d in docs if d["domain"] == domain]
        print(f"  {domain:7s} {len(sub):5d} docs {sum(len(d['text']) for d in sub) / 1e6:6.2f} M chars")


if __name__ == "__main__":
    main()
