"""Ask the model every question: batched greedy generation with mlx-lm.

The same chat messages are used to ask a question and to train its answer, so what the
diagnosis measures is what training changes.
"""

from collections.abc import Callable

from mlx_lm import batch_generate
from mlx_lm.sample_utils import make_sampler

from .data import Record

# New-token budgets per kind: enough for the answer, not for an essay.
MAX_NEW_TOKENS = {"short": 32, "mcq": 16, "long": 128}
MCQ_INSTRUCTION = "Answer with the letter of the correct option."

# What answers a batch of records at a temperature: the model in this process, or a server (server.py).
Answerer = Callable[[list[Record], float], list[str]]


def question_text(record: Record) -> str:
    if record.kind == "mcq" and record.choices:
        options = "\n".join(f"{letter}) {text}" for letter, text in record.choices.items())
        return f"{record.question}\n\n{options}\n\n{MCQ_INSTRUCTION}"
    if record.kind == "mcq":
        return f"{record.question}\n\n{MCQ_INSTRUCTION}"
    return record.question


def prompt_messages(record: Record) -> list[dict]:
    return [*record.context, {"role": "user", "content": question_text(record)}]


def training_messages(record: Record, target: str) -> list[dict]:
    return [*prompt_messages(record), {"role": "assistant", "content": target}]


def answer_batch(model, tokenizer, records: list[Record], temperature: float = 0.0) -> list[str]:
    """Answers for a batch of records, in order: greedy, or sampled at a temperature."""
    prompts = [tokenizer.apply_chat_template(prompt_messages(r), add_generation_prompt=True) for r in records]
    budgets = [MAX_NEW_TOKENS[r.kind] for r in records]
    sampler = make_sampler(temp=temperature) if temperature > 0 else None
    texts = batch_generate(model, tokenizer, prompts, max_tokens=budgets, sampler=sampler).texts
    return [text.strip() for text in texts]


def in_process(model, tokenizer) -> Answerer:
    return lambda records, temperature=0.0: answer_batch(model, tokenizer, records, temperature)


def by_length(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (len(question_text(r)), r.id))


def length_sorted_batches(records: list[Record], batch_size: int) -> list[list[Record]]:
    """Similar-length prompts together waste less compute on padding."""
    ordered = by_length(records)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
