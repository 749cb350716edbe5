"""Read question-answer datasets into records, and split them.

Accepted shapes, one object per JSONL line, per item of a JSON array, or per row of a CSV
(a header row names the fields) or Parquet file:
  {"question", "answer", "aliases"?, "choices"?, "kind"?}     the project's own shape
  {"instruction", "input"?, "output"}                          Alpaca
  {"messages": [..., {"role": "assistant", "content"}]}        chat
  {"prompt", "completion"}                                      completions
Any of these files may be gzip-compressed (`data.jsonl.gz`). Every problem is a
`DataError("FILE:LINE: problem")` (a CSV's line, a Parquet file's row): `load_records` stops
at the first one, before any model work; `read_items` yields them all, for `data check`.
The input file is only ever opened for reading.
"""

import csv
import gzip
import hashlib
import io
import json
import logging
import random
import re
import zlib
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path


log = logging.getLogger("slearn_mlx")

KINDS = ("short", "mcq", "long")
SHORT_ANSWER_WORDS = 12
# The first of these string fields a record carries is its topic, for the knowledge map.
TOPIC_FIELDS = ("topic", "domain", "category", "subject", "source")


class DataError(ValueError):
    pass


# Options written inside the question, one a line: "A: text", "A. text", "(A) text".
MCQ_OPTION = re.compile(r"^\s*\(?([A-J])[.:)]\s+(.+?)\s*$", re.MULTILINE)
# The letters a multiple-choice answer may have when the record names no options.
DEFAULT_LETTERS = "ABCDE"


@dataclass
class Record:
    id: str
    question: str
    answer: str
    kind: str
    aliases: list[str] = field(default_factory=list)
    choices: dict[str, str] | None = None
    context: list[dict] = field(default_factory=list)  # chat turns before the question
    line: int = 0
    # The object as the user wrote it: exported as is (`diagnose --export-unknown`), and the
    # source of the topic. Not part of the id, so extra fields never change which record is which.
    raw: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def topic(self) -> str | None:
        return next((v.strip() for k in TOPIC_FIELDS if isinstance(v := self.raw.get(k), str) and v.strip()), None)


def choices_of(record: Record) -> dict[str, str] | None:
    """The options: separate, or written inside the question as "A: text" / "A. text" / "(A) text" lines."""
    if record.choices:
        return record.choices
    return dict(MCQ_OPTION.findall(record.question)) or None


def check_answer_letter(record: Record, where: str) -> None:
    """A multiple-choice answer is graded by its letter, so one that no option has can never be right."""
    options = choices_of(record)
    letters = sorted({letter.upper() for letter in options}) if options else list(DEFAULT_LETTERS)
    if record.answer.strip().upper() not in letters:
        named = ("its choices" if record.choices else "the options in its question" if options
                 else "A-E (it has no choices)")
        raise DataError(f"{where}: multiple-choice answer {record.answer!r} is not a letter of {named} "
                        f"({', '.join(letters)}); it could never be graded right")


def default_dataset() -> Path:
    return Path(str(files("slearn_mlx") / "datasets" / "default.jsonl"))


def record_id(question: str, answer: str, context: list[dict], choices: dict | None) -> str:
    """Stable across runs and machines: a hash of the content, not the position."""
    payload = json.dumps([context, question, answer, choices], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _text(obj: dict, key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value.strip()


def _from_messages(obj: dict, where: str) -> tuple[str, str, list[dict]]:
    messages = obj["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{where}: 'messages' must be a list of at least a user and an assistant turn")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
    if messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise DataError(f"{where}: 'messages' must end with a user turn followed by an assistant turn")
    context = [{"role": m["role"], "content": m["content"]} for m in messages[:-2]]
    return messages[-2]["content"].strip(), messages[-1]["content"].strip(), context


def guess_kind(answer: str, choices: dict | None) -> str:
    if choices or re.fullmatch(r"[A-Ea-e]", answer):
        return "mcq"
    return "short" if len(answer.split()) <= SHORT_ANSWER_WORDS else "long"


def input_shape(obj: dict) -> str | None:
    """Which accepted shape an object is written in, by the field that marks it; None for none."""
    for key, shape in (("messages", "chat"), ("instruction", "alpaca"), ("prompt", "prompt/completion"),
                       ("question", "question/answer")):
        if key in obj:
            return shape
    return None


def parse_record(obj, where: str) -> Record:
    """One raw object in any accepted shape -> a Record, or a DataError naming `where`."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    context: list[dict] = []
    shape = input_shape(obj)
    if shape == "chat":
        question, answer, context = _from_messages(obj, where)
    elif shape == "alpaca":
        question = _text(obj, "instruction", where)
        if extra := _text(obj, "input", where, required=False):
            question = f"{question}\n\n{extra}"
        answer = _text(obj, "output", where)
    elif shape == "prompt/completion":
        question, answer = _text(obj, "prompt", where), _text(obj, "completion", where)
    elif shape == "question/answer":
        question, answer = _text(obj, "question", where), _text(obj, "answer", where)
    else:
        raise DataError(f"{where}: no known shape (need question/answer, instruction/output, messages, or prompt/completion)")
    if shape != "chat" and "system" in obj:
        # A system instruction some datasets carry beside the question (how to answer, e.g. the option format).
        context = [{"role": "system", "content": _text(obj, "system", where)}]
    if not question:
        raise DataError(f"{where}: empty question")
    if not answer:
        raise DataError(f"{where}: empty answer")

    aliases = obj.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError(f"{where}: 'aliases' must be a list of strings")
    choices = obj.get("choices")
    if choices is not None and not (isinstance(choices, dict) and all(isinstance(v, str) for v in choices.values())):
        raise DataError(f"{where}: 'choices' must be an object mapping option letters to strings")
    kind = obj.get("kind") or guess_kind(answer, choices)
    if kind not in KINDS:
        raise DataError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    record = Record(
        id=record_id(question, answer, context, choices),
        question=question,
        answer=answer,
        kind=kind,
        aliases=[a.strip() for a in aliases if a.strip()],
        choices=choices,
        context=context,
        raw=obj,
    )
    if kind == "mcq":
        check_answer_letter(record, where)
    return record


def _json_array_items(text: str, path: Path):
    """Yield (line, object) for each item of a top-level JSON array, keeping line numbers for errors."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos:].startswith("["):
        raise DataError(f"{path}:1: a .json dataset must be an array of objects (use .jsonl for one object per line)")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{path}:{text.count(chr(10)) + 1}: unterminated JSON array")
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        yield line, obj


GZIP_MAGIC = b"\x1f\x8b"
# Fields a CSV cell may hold as JSON, since a cell is text: ["alias", ...], {"A": "option", ...}, [turn, ...].
JSON_CELLS = ("aliases", "choices", "messages")


def file_format(path: Path) -> str:
    """json, csv, parquet or jsonl (anything else), from the name without a .gz ending."""
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    return {".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fp:
        return fp.read(2) == GZIP_MAGIC


def _jsonl_items(fp, path: Path):
    for line, raw in enumerate(fp, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield line, DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})")
            continue
        text = text.lstrip("\ufeff").strip()
        if not text:
            continue
        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as e:
            yield line, DataError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})")


def csv_cell(field: str, text: str):
    if field in JSON_CELLS and text.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # left as text: the record's check names the field
    return text


def _csv_items(fp, path: Path):
    """(line, object) per row, keyed by the header row; an empty cell is an absent field."""
    reader = csv.reader(io.TextIOWrapper(fp, encoding="utf-8-sig", newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        while True:
            line = reader.line_num + 1  # where the row starts; a quoted cell may span lines
            row = next(reader, None)
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield line, DataError(f"{path}:{line}: {len(row)} cells, but the header has {len(header)}")
                continue
            yield line, {name: csv_cell(name, cell) for name, cell in zip(header, row) if cell.strip()}
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{reader.line_num + 1}: not UTF-8 text ({e.reason})") from None


def _parquet_items(fp, path: Path):
    """(row, object) per row, counted from 1; a null is an absent field."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'slearn-mlx[parquet]'") from None
    try:
        rows = (row for batch in pq.ParquetFile(fp).iter_batches() for row in batch.to_pylist())
        for number, row in enumerate(rows, start=1):
            yield number, {key: value for key, value in row.items() if value is not None}
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def _raw_items(path: Path):
    """Yield (line, object) for each item; in JSONL and CSV a line that cannot be read yields
    (line, DataError) and reading goes on, since the next line stands on its own."""
    fmt = file_format(path)
    with (gzip.open if is_gzip(path) else open)(path, "rb") as fp:
        try:
            if fmt == "json":
                try:
                    text = fp.read().decode("utf-8-sig")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                yield from _json_array_items(text, path)
            else:
                yield from {"csv": _csv_items, "parquet": _parquet_items, "jsonl": _jsonl_items}[fmt](fp, path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise DataError(f"{path}: a broken gzip file ({str(e) or 'cut short'})") from None


def read_items(path: Path):
    """Yield each item of a dataset file as a Record, or as the DataError that item has.

    A problem that leaves nothing after it readable (no file, a broken JSON array) raises.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    first_shape: tuple[str, int] | None = None
    for line, obj in _raw_items(path):
        if isinstance(obj, DataError):
            yield obj
            continue
        try:
            record = parse_record(obj, f"{path}:{line}")
        except DataError as e:
            yield e
            continue
        record.line = line
        # One file, one shape: a mix is most often two files joined by mistake.
        shape = input_shape(obj)
        first_shape = first_shape or (shape, line)
        if shape != first_shape[0]:
            yield DataError(f"{path}:{line}: shape {shape}, but line {first_shape[1]} is {first_shape[0]}; "
                            "one file holds one shape")
            continue
        yield record


def drop_repeats(records: list[Record]) -> tuple[list[Record], list[tuple[int, int]]]:
    """Real datasets repeat pairs; an identical pair adds nothing but weight, so it counts once.

    Returns the records without repeats, and (line, line of the first occurrence) per repeat.
    """
    first_line: dict[str, int] = {}
    unique, repeats = [], []
    for record in records:
        if record.id in first_line:
            repeats.append((record.line, first_line[record.id]))
            continue
        first_line[record.id] = record.line
        unique.append(record)
    return unique, repeats


def describe_repeats(repeats: list[tuple[int, int]], limit: int = 3) -> str:
    shown = "; ".join(f"line {line} repeats line {first}" for line, first in repeats[:limit])
    return shown + ("; ..." if len(repeats) > limit else "")


def load_records(path: Path) -> list[Record]:
    """All records of a dataset file, validated; raises DataError on the first problem."""
    records = []
    for item in read_items(path):
        if isinstance(item, DataError):
            raise item
        records.append(item)
    records, repeats = drop_repeats(records)
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    if repeats:
        log.warning(f"{path}: {len(repeats)} records repeat an earlier one and are counted once ({describe_repeats(repeats)})")
    if shared := shared_input_ids(records):
        # Real sets reuse an id for each meaning of one term (vera_acronyms: 1,770 ids); records are
        # told apart by their content, so this is worth saying but not refusing.
        line, first, given = shared[0]
        log.warning(f"{path}: {len(shared)} records reuse the 'id' of another record with other content "
                    f"(line {line} reuses {given!r} of line {first}); slearn-mlx identifies records by content")
    return records


def shared_input_ids(records: list[Record]) -> list[tuple[int, int, str]]:
    """(line, line of first use, id) for each record whose input 'id' field an earlier record already used."""
    first: dict[str, int] = {}
    shared = []
    for record in records:
        given = record.raw.get("id")
        if isinstance(given, (str, int)):
            if str(given) in first:
                shared.append((record.line, first[str(given)], given))
            else:
                first[str(given)] = record.line
    return shared


def assign_splits(records: list[Record], held_out_fraction: float, validation_fraction: float,
                  seed: int) -> dict[str, str]:
    """id -> "train", "validation" or "held_out"; seeded, and the same whatever the record order.

    Held-out records are never trained on and measure generalisation at the end; validation
    records are never trained on either and choose when to stop training.
    """
    ids = sorted(r.id for r in records)
    random.Random(seed).shuffle(ids)
    held_out = round(len(ids) * held_out_fraction)
    validation = round(len(ids) * validation_fraction)
    return {i: "held_out" if n < held_out else "validation" if n < held_out + validation else "train"
            for n, i in enumerate(ids)}
