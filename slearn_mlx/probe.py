"""Diagnosis without generation: score the reference answer under teacher forcing.

One batched forward pass per batch of records gives, for each reference answer, the mean
log-probability of its tokens after the question, and whether greedy decoding would produce
exactly those tokens. No token is generated, so it costs a fraction of answering; what it
measures is narrower (would the model say *this* answer, in *these* words), so its agreement
with generate-and-grade is measured, not assumed (benchmarks/diagnosis.py).
"""

import math

import mlx.core as mx

from .answer import prompt_messages, training_messages
from .data import Record


def answer_span(tokenizer, record: Record) -> tuple[list[int], int, int]:
    """Tokens of question + reference answer, and where the answer's own tokens start and end."""
    prompt = tokenizer.apply_chat_template(prompt_messages(record), add_generation_prompt=True)
    full = tokenizer.apply_chat_template(training_messages(record, record.answer))
    answer_only = tokenizer.encode(record.answer, add_special_tokens=False)
    return full, len(prompt), len(prompt) + len(answer_only)


def probe_batch(model, tokenizer, records: list[Record], threshold: float) -> list[dict]:
    """Rows {id, mean_logprob, greedy_reproduces, correct}; correct when mean_logprob >= threshold."""
    spans = [answer_span(tokenizer, r) for r in records]
    longest = max(len(tokens) for tokens, _, _ in spans)
    # Right padding needs no mask: a causal model's logits never see later positions.
    inputs = mx.array([tokens + [0] * (longest - len(tokens)) for tokens, _, _ in spans])
    logits = model(inputs[:, :-1]).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    targets = inputs[:, 1:]
    token_logprobs = mx.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    greedy = mx.argmax(logits, axis=-1)
    positions = mx.arange(targets.shape[1])[None]
    starts = mx.array([start - 1 for _, start, _ in spans])[:, None]  # logits at t predict token t + 1
    ends = mx.array([end - 1 for _, _, end in spans])[:, None]
    in_answer = (positions >= starts) & (positions < ends)
    counts = in_answer.sum(axis=1)
    mean_logprob = ((token_logprobs * in_answer).sum(axis=1) / counts).tolist()
    reproduces = (((greedy == targets) | ~in_answer).all(axis=1)).tolist()
    return [
        {"id": r.id, "mean_logprob": round(lp, 4), "greedy_reproduces": rep, "correct": lp >= threshold,
         "grader": "probe", "score": round(math.exp(lp), 4)}  # geometric mean probability of the answer tokens
        for r, lp, rep in zip(records, mean_logprob, reproduces)
    ]
