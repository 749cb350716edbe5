"""Teacher-forced forward passes over (prompt, answer) token rows, doing only the work the answer needs.

Training, the per-epoch check and the probe all ask one question of a batch of rows: what does
the model predict at each answer token? Two shortcuts answer it exactly, with less work:
- the tokens every row of a batch starts with (the system prompt and chat template: 31 of the
  ~45 prompt tokens of a SmolLM2 question) go through the model once, and the rows attend to
  that one copy, gradients included;
- only the positions that predict answer tokens go through the output layer, whose 49k-word
  projection costs as much per position as a fifth of SmolLM2-135M's transformer.
Each shortcut is checked against the model's own full forward pass once per model (`plan`);
an architecture where either gives other logits runs without it.
"""

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .mlx_lm_internals import SharedPrefixCache, body, output_head, plain_kv_caches

# Fewer shared tokens than this are not worth a forward pass of their own.
MIN_SHARED_PREFIX = 8


@dataclass
class Span:
    """A token row and the part of it that is scored: tokens[start:end]."""
    tokens: list[int]
    start: int
    end: int


@dataclass
class Packed:
    """A batch of spans as arrays: the shared prefix once, the rest right-padded, and where
    in the rest each scored token is predicted."""
    prefix: mx.array | None  # (P,) tokens every row starts with; None when not worth sharing
    inputs: mx.array  # (rows, length) the tokens after the prefix, up to each row's last predictor
    positions: mx.array  # (rows, answer) index into inputs of the position predicting each scored token
    targets: mx.array  # (rows, answer) the scored tokens
    mask: mx.array  # (rows, answer) real scored tokens, not padding


@dataclass
class Plan:
    """How a model's forward pass may be cut short, as checked on the model itself."""
    head: object | None  # hidden states -> logits, when the model's last step can be called alone
    share_prefix: bool


def shared_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens all rows share, leaving each at least one of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def pack(spans: list[Span], share_prefix: bool = True) -> Packed:
    # The prefix stops before every row's first predictor (start - 1), so each row has one.
    shared = shared_prefix([s.tokens[:s.start] for s in spans]) if share_prefix else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    length = max(s.end - 1 - shared for s in spans)
    answer = max(s.end - s.start for s in spans)
    inputs = np.zeros((len(spans), length), np.int32)
    positions = np.zeros((len(spans), answer), np.int32)
    targets = np.zeros((len(spans), answer), np.int32)
    mask = np.zeros((len(spans), answer), bool)
    for row, s in enumerate(spans):
        inputs[row, : s.end - 1 - shared] = s.tokens[shared : s.end - 1]
        n = s.end - s.start
        positions[row, :n] = np.arange(s.start - 1 - shared, s.end - 1 - shared)
        targets[row, :n] = s.tokens[s.start : s.end]
        mask[row, :n] = True
    prefix = mx.array(spans[0].tokens[:shared]) if shared else None
    return Packed(prefix, mx.array(inputs), mx.array(positions), mx.array(targets), mx.array(mask))


def before_positions(model, plan: Plan):
    """What runs over every position: the body when the plan projects only some, else the whole model."""
    return body(model) if plan.head else model


def logits_at(model, inputs: mx.array, positions: mx.array, plan: Plan, cache=None) -> mx.array:
    """(rows, k, vocabulary) logits at k positions of each row of inputs, as the model's own forward
    pass gives them; through its output step alone when the plan allows."""
    out = before_positions(model, plan)(inputs, cache=cache)
    out = mx.take_along_axis(out, positions[..., None], axis=1)
    return plan.head(out) if plan.head else out


def answer_logits(model, packed: Packed, plan: Plan) -> mx.array:
    """(rows, answer, vocabulary) logits at the positions that predict the scored tokens."""
    cache = None
    if packed.prefix is not None:
        cache = [SharedPrefixCache() for _ in model.layers]
        before_positions(model, plan)(packed.prefix[None], cache=cache)
    return logits_at(model, packed.inputs, packed.positions, plan, cache)


def plan(model) -> Plan:
    """The shortcuts that give this model's own logits, found by trying them on a short row."""
    tokens = list(range(1, 25))
    span = Span(tokens, start=20, end=24)
    expected = model(mx.array([tokens[:-1]]))[:, 19:23]

    def agrees(candidate: Plan) -> bool:
        try:
            got = answer_logits(model, pack([span, span], candidate.share_prefix), candidate)[:1]
            return got.shape == expected.shape and mx.allclose(got, expected, rtol=1e-3, atol=1e-3).item()
        except (AttributeError, TypeError, ValueError):  # an architecture built otherwise
            return False

    head = output_head(model)
    kv_caches = plain_kv_caches(model)
    candidates = [Plan(head, kv_caches), Plan(head, False)] if head else []
    candidates.append(Plan(None, kv_caches))
    return next((c for c in candidates if agrees(c)), Plan(None, False))
