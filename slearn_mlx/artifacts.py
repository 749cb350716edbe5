"""Run-folder files: JSONL rows appended as work finishes, JSON written atomically.

A killed process can leave a half-written last line; reading drops it, so the work it
described is simply redone.
"""

import json
import os
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fp:
        lines = fp.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the torn tail of an interrupted append
                break
            raise ValueError(f"{path}:{number}: corrupt row in a run file; delete the file to redo its stage") from None
    return rows


def drop_torn_tail(path: Path) -> None:
    """Cut an unfinished last line, so the next append starts on a line of its own."""
    if not path.exists():
        return
    with open(path, "rb+") as fp:
        data = fp.read()
        if data and not data.endswith(b"\n"):
            fp.truncate(data.rfind(b"\n") + 1)


def jsonl(rows: list[dict]) -> str:
    """Rows as JSON Lines: one object a line, non-ASCII text as written."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def append_rows(path: Path, rows: list[dict]) -> None:
    drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as out:
        out.write(jsonl(rows))


def write_rows(path: Path, rows: list[dict]) -> None:
    write_atomic(path, jsonl(rows))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))
