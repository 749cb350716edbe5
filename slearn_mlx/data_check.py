"""`data check`: what a dataset holds and every problem in it, before any model work.

Lengths are counted with the chosen model's tokenizer only; its weights are never loaded.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlx_lm.utils import load_tokenizer

from .prompts import chat_tokens, question_text, training_messages
from .data import TOPIC_FIELDS, DataError, Record, describe_repeats, drop_repeats, input_shape, read_items


@dataclass
class DataCheck:
    path: Path
    records: list[Record]  # without repeats, as a run would use them
    repeats: list[tuple[int, int]]
    problems: list[str]
    unreadable: bool = False  # the file itself stopped the reading: no record after the last problem was read
    tokens: dict[str, list[int]] = field(default_factory=dict)  # per part: one length per record
    too_long: list[tuple[int, int]] = field(default_factory=list)  # (line, tokens) over max_seq_length
    max_seq_length: int | None = None  # training's limit on an example, as the user would train


def token_lengths(records: list[Record], tokenizer) -> dict[str, list[int]]:
    """Token counts of the question as asked, the reference answer, and the whole training example."""
    return {
        "question": [len(tokenizer.encode(question_text(r), add_special_tokens=False)) for r in records],
        "answer": [len(tokenizer.encode(r.answer, add_special_tokens=False)) for r in records],
        "training example": [len(chat_tokens(tokenizer, training_messages(r, r.answer))) for r in records],
    }


def check_dataset(path: Path, model_path: Path | None = None, max_seq_length: int | None = None) -> DataCheck:
    """Read every item of the file, collecting all problems instead of stopping at the first; with a
    model, count lengths in its tokens and name the examples longer than max_seq_length."""
    records, problems = [], []
    try:
        for item in read_items(path):
            if isinstance(item, DataError):
                problems.append(str(item))
            else:
                records.append(item)
    except DataError as e:  # the file itself cannot be read further
        problems.append(str(e))
        unreadable = True
    else:
        unreadable = False
    records, repeats = drop_repeats(records)
    if not records and not problems:
        problems.append(f"{path}: no records (the file is empty)")
    check = DataCheck(Path(path), records, repeats, problems, unreadable, max_seq_length=max_seq_length)
    if model_path is not None and records:
        check.tokens = token_lengths(records, load_tokenizer(Path(model_path)))
        if max_seq_length is not None:
            check.too_long = [(r.line, n) for r, n in zip(records, check.tokens["training example"])
                              if n > max_seq_length]
    return check


def counted(counter: Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


def render_check(check: DataCheck, model_name: str | None = None, topics_shown: int = 15) -> str:
    raws = [r.raw for r in check.records]
    lines = [f"{check.path}: {len(check.records)} records"]
    if check.repeats:
        lines[0] += f" ({len(check.repeats)} more repeat an earlier one and count once: {describe_repeats(check.repeats)})"
    if check.records:
        lines.append(f"shapes: {counted(Counter(input_shape(raw) for raw in raws))}")
        lines.append(f"fields: {counted(Counter(key for raw in raws for key in raw))}")
        lines.append(f"kinds: {counted(Counter(r.kind for r in check.records))}")
        topics = Counter(r.topic for r in check.records if r.topic)
        if topics:
            rest = len(topics) - topics_shown
            lines.append(f"topics ({len(topics)}): {counted(Counter(dict(topics.most_common(topics_shown))))}"
                         + (f", and {rest} more" if rest > 0 else ""))
        else:
            lines.append(f"topics: none (no {'/'.join(TOPIC_FIELDS)} field)")
    if check.tokens:
        lines.append(f"tokens ({model_name}):   min  median   p95    max")
        for part, counts in check.tokens.items():
            q = np.percentile(counts, [0, 50, 95, 100])
            lines.append(f"  {part:<17} {q[0]:5.0f} {q[1]:7.0f} {q[2]:5.0f} {q[3]:6.0f}")
        for line, n in check.too_long:
            lines.append(f"warning: {check.path}:{line}: {n} tokens, over --max-seq-length {check.max_seq_length}; "
                         "training leaves it out")
    lines.append(f"problems: {len(check.problems)}")
    lines += [f"  {problem}" for problem in check.problems]
    return "\n".join(lines)
