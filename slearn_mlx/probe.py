"""Score a target answer under teacher forcing, without generating.

For each (question, target) it gives the mean log-probability of the target's tokens after the
question, and whether greedy decoding would say exactly those tokens. `--diagnosis probe` scores each
record's reference this way: a fraction of the cost of answering, but narrower (would the model say
*this* answer in *these* words), so its agreement with generate-and-grade is measured, not assumed
(benchmarks/diagnosis.py). Training scores its spans with the same `target_span`.
"""

import math

import mlx.core as mx

from .prompts import chat_tokens, prompt_messages, training_messages
from .data import Record
from .forward import Plan, Span, answer_logits, pack, plan

BATCH = 64


def target_span(tokenizer, record: Record, target: str, limit: int | None = None) -> Span:
    """Tokens of the question and target as training sees them; scored: the target's own tokens,
    the first `limit` of them when given (not the end-of-turn tokens the template adds)."""
    prompt = chat_tokens(tokenizer, prompt_messages(record), True)
    full = chat_tokens(tokenizer, training_messages(record, target))
    length = len(tokenizer.encode(target, add_special_tokens=False))
    return Span(full, len(prompt), len(prompt) + (min(length, limit) if limit else length))


def score_spans(model, spans: list[Span], forward: Plan) -> list[tuple[float, bool]]:
    """(mean log-probability of the scored tokens, greedy decoding gives exactly them) per span."""
    order = sorted(range(len(spans)), key=lambda i: len(spans[i].tokens))  # little padding per batch
    scores: list[tuple[float, bool]] = [(0.0, False)] * len(spans)
    for first in range(0, len(order), BATCH):
        chunk = order[first:first + BATCH]
        packed = pack([spans[i] for i in chunk], forward.share_prefix)
        logits = answer_logits(model, packed, forward).astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        token_logprobs = mx.take_along_axis(logprobs, packed.targets[..., None], axis=-1)[..., 0]
        mean = (token_logprobs * packed.mask).sum(axis=1) / packed.mask.sum(axis=1)
        exact = ((mx.argmax(logits, axis=-1) == packed.targets) | ~packed.mask).all(axis=1)
        for i, m, e in zip(chunk, mean.tolist(), exact.tolist()):
            scores[i] = (m, e)
    return scores


def probe_batch(model, tokenizer, records: list[Record], threshold: float, forward: Plan | None = None) -> list[dict]:
    """Rows {id, mean_logprob, greedy_reproduces, correct}; correct when mean_logprob >= threshold."""
    spans = [target_span(tokenizer, r, r.answer) for r in records]
    scores = score_spans(model, spans, forward or plan(model))
    return [
        {"id": r.id, "mean_logprob": round(lp, 4), "greedy_reproduces": exact, "correct": lp >= threshold,
         "grader": "probe", "score": round(math.exp(lp), 4)}  # geometric mean probability of the answer tokens
        for r, (lp, exact) in zip(records, scores)
    ]
