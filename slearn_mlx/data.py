"""Read question-answer datasets into records, and split them.

Accepted shapes, one object per JSONL line, per item of a JSON array, or per row of a CSV
(a header row names the fields) or Parquet file:
  {"question", "answer", "aliases"?, "choices"?, "kind"?}     the project's own shape
  {"instruction", "input"?, "output"}                          Alpaca
  {"messages": [..., {"role": "assistant", "content"}]}        chat
  {"prompt", "completion"}                                      completions
Any of these files may be gzip-compressed (`data.jsonl.gz`). Every problem is a
`DataError("FILE:LINE: problem")` (a CSV's line, a Parquet file's row): `load_records` refuses
the file at the first one, before any model work, and `usable_records` can leave the records with
one out instead (--skip-invalid); `read_items` yields them all, for `data check`.
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


# A line naming an option: "A: text", "A. text", "(A) text" (grade.py reads them in responses).
MCQ_OPTION = re.compile(r"^\s*\(?([A-J])[.:)]\s+(.+?)\s*$", re.MULTILINE)
# A line of a question that may be one of its options, in either case ("a) text" in MedMCQA).
OPTION_LINE = re.compile(r"^\s*\(?([A-Ja-j])[.:)]\s+(.+?)\s*$", re.MULTILINE)
# An answer written as an option's letter, with or without the option's text: "c) Atrophy", "(B)", "D."
LETTERED_ANSWER = re.compile(r"\(?([A-Ja-j])[.:)]\s*(.*)", re.DOTALL)
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


def inline_options(question: str) -> dict[str, str] | None:
    """The options written inside a question, one a line ("A: text", "A. text", "(A) text", "a) text"), by
    capital letter: the last run of two or more lines lettered from A on, in order and in one case. A line
    outside such a run, such as "H. capsulatum grows in soil", is text: a capitalised abbreviation."""
    runs: list[list[tuple[str, str]]] = []
    for letter, text in OPTION_LINE.findall(question):
        if letter in "Aa":
            runs.append([(letter, text)])
        elif runs and ord(letter) == ord(runs[-1][-1][0]) + 1:
            runs[-1].append((letter, text))
    run = next((run for run in reversed(runs) if len(run) >= 2), None)
    return {letter.upper(): text for letter, text in run} if run else None


def choices_of(record: Record) -> dict[str, str] | None:
    """The options: separate, or written inside the question (inline_options)."""
    return record.choices or inline_options(record.question)


def option_text(options: dict[str, str] | None, letter: str) -> str | None:
    return {key.upper(): text for key, text in (options or {}).items()}.get(letter.upper())


def same_text(a: str, b: str) -> bool:
    """Equal but for case, spacing and a final full stop."""
    return " ".join(a.casefold().split()).rstrip(".") == " ".join(b.casefold().split()).rstrip(".")


def answer_letter(answer: str, options: dict[str, str] | None) -> str | None:
    """The capital letter of an answer written as its option's letter and the text of that same option
    ("c) Atrophy" where option C is "Atrophy"), or as the letter with a bracket or stop ("(B)", "D.");
    None for any other answer, a lone letter included, which is graded as written."""
    written = LETTERED_ANSWER.fullmatch(answer)
    if not written:
        return None
    letter, text = written.group(1).upper(), written.group(2)
    option = option_text(options, letter)
    return letter if not text or (option is not None and same_text(text, option)) else None


def check_answer_letter(record: Record, where: str) -> None:
    """A multiple-choice answer is graded by its letter, so one that no option has can never be right."""
    options = choices_of(record)
    letters = sorted({letter.upper() for letter in options}) if options else list(DEFAULT_LETTERS)
    if (written := LETTERED_ANSWER.fullmatch(record.answer)) and written.group(2):
        letter, option = written.group(1).upper(), option_text(options, written.group(1))
        found = f"({option!r})" if option else f"(there is no option {letter})" if options else "(it has no options)"
        raise DataError(f"{where}: multiple-choice answer {record.answer!r} gives letter {letter} with other text "
                        f"than option {letter}'s {found}")
    if options and len(letters) < 2:
        raise DataError(f"{where}: a multiple-choice question needs two options or more; it has only {letters[0]}")
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


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def json_type(value) -> str:
    return JSON_TYPES.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _text(obj: dict, key: str, where: str, required: bool = True) -> str:
    """A text field, stripped; a number is read as its text ("answer": 42 is "42")."""
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field '{key}'" if key not in obj else f"{where}: field '{key}' is null")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {json_type(value)}")
    if "\x00" in value:
        raise DataError(f"{where}: field '{key}' holds a NUL byte")
    return value.strip()


# The roles every chat template knows; a turn of another role would be dropped or refused by some templates.
ROLES = ("system", "user", "assistant")


def _from_messages(obj: dict, where: str) -> tuple[str, str, list[dict]]:
    messages = obj["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{where}: 'messages' must be a list of at least a user and an assistant turn")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: messages[{i}] has role {m['role']!r}; the roles are {', '.join(ROLES)}")
    if messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise DataError(f"{where}: 'messages' must end with a user turn followed by an assistant turn")
    context = [{"role": m["role"], "content": m["content"]} for m in messages[:-2]]
    return messages[-2]["content"].strip(), messages[-1]["content"].strip(), context


def guess_kind(answer: str, choices: dict | None, options: dict | None) -> str:
    if choices or re.fullmatch(r"[A-Ea-e]", answer) or (options and answer_letter(answer, options)):
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
        raise DataError(f"{where}: expected a JSON object, got {json_type(obj)}")
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

    aliases = obj.get("aliases")
    if aliases is None:
        aliases = []
    if not isinstance(aliases, list):
        raise DataError(f"{where}: 'aliases' must be a list of strings, got {json_type(aliases)}")
    aliases = [_text({"alias": a}, "alias", f"{where}: aliases[{i}]") for i, a in enumerate(aliases)]
    choices = obj.get("choices")
    if choices is not None and not (isinstance(choices, dict) and all(isinstance(v, str) for v in choices.values())):
        raise DataError(f"{where}: 'choices' must be an object mapping option letters to strings")
    options = choices or inline_options(question)
    kind = obj.get("kind") or guess_kind(answer, choices, options)
    if kind not in KINDS:
        raise DataError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "mcq" and (letter := answer_letter(answer, options)):
        answer = letter  # graded by the letter; the text it was written with is the option's own
    record = Record(
        id=record_id(question, answer, context, choices),
        question=question,
        answer=answer,
        kind=kind,
        aliases=[a for a in aliases if a],
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
NEWLINE = b"\n"
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
        if "\x00" in text:
            yield line, DataError(f"{path}:{line}: a NUL byte at column {text.index(chr(0)) + 1}; not a line of text")
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


def header_problem(header: list[str]) -> str | None:
    """Why no row under this CSV header can be a record, or None: every row would fail alike."""
    shape = input_shape(dict.fromkeys(header))
    if shape is None:
        return f"the header names none of question, instruction, messages, prompt ({', '.join(header)})"
    answer = {"question/answer": "answer", "alpaca": "output", "prompt/completion": "completion"}.get(shape)
    if answer and answer not in header:
        return f"the header has no '{answer}' column ({', '.join(header)})"
    return None


# A byte that is not UTF-8, as decoding with surrogateescape keeps it: found per row, so the other rows still read.
NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _csv_items(fp, path: Path):
    """(line, object) per row, keyed by the header row; an empty cell is an absent field."""
    text = fp.read().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        if problem := header_problem(header):
            raise DataError(f"{path}:1: {problem}")
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
            if byte := next((m.group() for cell in row if (m := NOT_UTF8.search(cell))), None):
                yield line, DataError(f"{path}:{line}: not UTF-8 text (byte 0x{ord(byte) - 0xDC00:02x})")
                continue
            yield line, {name: csv_cell(name, cell) for name, cell in zip(header, row) if cell.strip()}
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None


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
    line = 0  # the last item's line: a gzip stream that breaks off breaks off after it
    with (gzip.open if is_gzip(path) else open)(path, "rb") as fp:
        try:
            if fmt == "json":
                raw = fp.read()
                try:
                    text = raw.decode("utf-8-sig")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{raw.count(NEWLINE, 0, e.start) + 1}: not UTF-8 text "
                                    f"({e.reason} at byte {e.start})") from None
                items = _json_array_items(text, path)
            else:
                items = {"csv": _csv_items, "parquet": _parquet_items, "jsonl": _jsonl_items}[fmt](fp, path)
            for line, obj in items:
                yield line, obj
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise DataError(f"{path}:{line + 1}: a broken gzip file ({str(e) or 'cut short'})") from None


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


def read_records(path: Path) -> tuple[list[Record], list[DataError]]:
    """The records of a file that read, and the problem of each item that does not, in file order.

    A problem of the file itself (no file, a broken JSON array or gzip stream) raises: nothing after it
    can be read, so no record is left to skip to.
    """
    records, refused = [], []
    for item in read_items(path):
        (refused if isinstance(item, DataError) else records).append(item)
    return records, refused


def usable_records(path: Path, records: list[Record], refused: list[DataError], skip_invalid: bool = False) -> list[Record]:
    """The records a run uses: a refused record stops it, naming the first, unless skip_invalid leaves each
    out with its name; a pair repeated counts once."""
    if refused and not skip_invalid:
        raise DataError(f"{refused[0]} ({len(refused)} of {len(records) + len(refused)} records refused; "
                        "`data check` lists them, --skip-invalid leaves them out)")
    for problem in refused:
        log.warning(f"{problem}; left out (--skip-invalid)")
    records, repeats = drop_repeats(records)
    if not records:
        raise DataError(f"{path}: no records" + (" left" if refused else " (the file is empty)"))
    if repeats:
        log.warning(f"{path}: {len(repeats)} records repeat an earlier one and are counted once ({describe_repeats(repeats)})")
    if shared := shared_input_ids(records):
        # Real sets reuse an id for each meaning of one term (vera_acronyms: 1,770 ids); records are
        # told apart by their content, so this is worth saying but not refusing.
        line, first, given = shared[0]
        log.warning(f"{path}: {len(shared)} records reuse the 'id' of another record with other content "
                    f"(line {line} reuses {given!r} of line {first}); slearn-mlx identifies records by content")
    return records


def load_records(path: Path) -> list[Record]:
    """All records of a dataset file, validated; raises DataError naming the first problem."""
    return usable_records(path, *read_records(path))


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
