"""How a record is put to a model and how its answer is read: the chat messages of a question and of
its training example, each kind's token budget, and where a short answer ends.

The same messages ask a question and train its answer, so what the diagnosis measures is what
training changes; a server is asked them too (backends.py). Nothing here needs MLX: the graders,
`data check` and the data tools use it without loading a model.
"""

import re

from .data import Record

# New-token budgets per kind: enough for the answer, not for an essay.
MAX_NEW_TOKENS = {"short": 32, "mcq": 16, "long": 128}
MCQ_INSTRUCTION = "Answer with the letter of the correct option."


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


def chat_tokens(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Messages as the model's chat template writes them, with thinking off. A hybrid-reasoning model
    (Qwen3) otherwise opens every answer with a think block that spends the answer's token budget, and
    its template writes an empty block before a trained answer that the question alone never shows, so
    training would score the block instead of the answer."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, enable_thinking=False)


# A sentence ends at . ! or ? before a space, but not after an initial ("J. Smith", "Dr. No"), or at a line break.
FIRST_SENTENCE_END = re.compile(r"(?<![A-Z])(?<!\b[A-Z][a-z])[.!?](?=\s)|\n")


def first_answer(text: str, short: bool) -> str:
    if short and (end := FIRST_SENTENCE_END.search(text)):
        text = text[:end.end()]
    return text.strip()
