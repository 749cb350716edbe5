"""Batched greedy decoding of our own, for the models whose every layer keeps a plain KV cache.

mlx-lm's BatchGenerator serves a stream of requests; we answer a fixed batch and stop, so it costs us
work we do not need: it gathers the whole KV cache out of the batch each time a row finishes, splits
the logits of the batch into one array per row at every step, and cannot start from a draft. Here:
- the prompt prefix every row shares goes through the model once and is copied into each row;
- the rows' own prompt tokens, and a draft answer after them when there is one, are prefilled right-padded
  in one pass; each row keeps its own positions (RoPE offsets) and a mask of its real columns, so a
  row's attention sees exactly what it would see decoded alone;
- a draft (the answer the caller expects) is checked in that same pass: greedy decoding agrees with it
  up to the first token where the argmax differs, so its agreed tokens are taken at once, the rest of
  its columns masked out, and decoding resumes there from the pass's cache;
- a finished row keeps its place in the batch (its output is ignored) until half of the batch has
  finished; then the living rows are gathered once, not at each removal.
The answer is greedy decoding's own, token for token (tests/test_answer.py and test_architectures.py
hold it against mlx-lm decoding one prompt at a time).
"""

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .forward import Plan, before_positions
from .mlx_lm_internals import Columns, RowsCache


def drafts_pay() -> bool:
    """Whether checking a draft costs less than decoding it. On a CPU every token costs its arithmetic,
    whether prefilled or decoded (a batch of 64 decoded at 0.9x the rate of its prefill), so a draft
    the model departs from is work thrown away: the per-epoch check over 280 default records, a third
    of them departing, took 67 s drafted against 51 s plainly. A GPU decodes a batch a step at a time
    at a cost set by reading the weights, not by the rows, so a draft saves the steps it covers; not
    measured here (no Mac)."""
    return mx.default_device() != mx.cpu


@dataclass
class Row:
    """One row's answer as it is decoded: its tokens, and when it is finished."""
    budget: int
    stops: Callable[[list[int]], bool]  # told the tokens so far, whether the answer ends here
    tokens: list
    done: bool = False

    def take(self, token: int, eos: set[int]) -> None:
        if token in eos:  # the end-of-sequence token itself is not text
            self.done = True
            return
        self.tokens.append(token)
        self.done = len(self.tokens) >= self.budget or self.stops(self.tokens)


def greedy(logits: mx.array) -> mx.array:
    """The argmax of the log-probabilities, as mlx-lm picks: in bfloat16 the subtraction rounds near-equal
    logits to ties, which the argmax of the logits themselves would break otherwise."""
    return mx.argmax(logits - mx.logsumexp(logits, axis=-1, keepdims=True), axis=-1)


def decode(model, plan: Plan, prefix: list[int], prompts: list[list[int]], budgets: list[int],
           stops: list[Callable[[list[int]], bool]], eos: set[int], drafts: list[list[int]] | None = None,
           pick: Callable[[mx.array], mx.array] = greedy) -> list[list[int]]:
    """The tokens each prompt's answer is made of (the end-of-sequence token left out).

    `prefix` goes before every prompt and is computed once. A row ends at an end-of-sequence token, at
    its budget of new tokens (the end token counted, as mlx-lm counts it), or where `stops` says.
    `drafts`, one token list per prompt ([] for none), are checked in the prefill: greedy decoding's
    first tokens, whenever they agree with the draft, are taken from that pass. `pick` turns a row's
    logits into its token: greedy by default, or a sampler (then without drafts)."""
    drafts = [d[:budget] for d, budget in zip(drafts, budgets)] if drafts else [[] for _ in prompts]
    rows = [Row(budget, stop, []) for budget, stop in zip(budgets, stops)]
    lengths = [len(p) + len(d) for p, d in zip(prompts, drafts)]
    width = max(lengths)
    columns = Columns(len(prompts), len(prefix) + width + max(budgets))
    cache = [RowsCache(columns) for _ in model.layers]

    if prefix:
        columns.prefix = True
        before_positions(model, plan)(mx.array([prefix]), cache=cache)
        columns.prefix = False
        columns.real[:, :len(prefix)] = True
        columns.filled = columns.positions = len(prefix)

    # The prompts and drafts, right-padded; each row's logits are read where its prompt ends and at each
    # draft token, the predictions greedy decoding would make there, and nowhere else.
    inputs = np.zeros((len(prompts), width), np.int32)
    read_rows, read_at = [], []
    for r, (prompt, draft) in enumerate(zip(prompts, drafts)):
        inputs[r, :lengths[r]] = prompt + draft
        read_rows += [r] * (len(draft) + 1)
        read_at += range(len(prompt) - 1, lengths[r])
        columns.real[r, columns.filled:columns.filled + lengths[r]] = True
    hidden = before_positions(model, plan)(mx.array(inputs), cache=cache)[mx.array(read_rows), mx.array(read_at)]
    flat = pick(plan.head(hidden) if plan.head else hidden).tolist()
    starts = np.cumsum([0] + [len(d) + 1 for d in drafts])
    predicted = [flat[start:start + len(d) + 1] for start, d in zip(starts, drafts)]

    next_tokens, positions = [], []
    for r, (prompt, draft) in enumerate(zip(prompts, drafts)):
        agreed = 0
        while agreed < len(draft) and predicted[r][agreed] == draft[agreed]:
            agreed += 1
        for token in draft[:agreed] + [predicted[r][agreed]]:
            rows[r].take(token, eos)
            if rows[r].done:
                break
        # The draft's columns past the agreement are not what this row said: masked out for good.
        columns.real[r, columns.filled + len(prompt) + agreed:columns.filled + width] = False
        next_tokens.append(predicted[r][agreed])
        positions.append(len(prefix) + len(prompt) + agreed)  # where that token goes in as input
    positions = np.array(positions)
    columns.filled += width

    batch = list(range(len(rows)))  # which row each place of the batch holds
    token = mx.array(next_tokens)[:, None]
    while living := [b for b, r in enumerate(batch) if not rows[r].done]:
        if len(living) <= len(batch) // 2:  # half the batch finished: go on with the living rows alone
            keep = mx.array(living)
            for layer in cache:
                layer.keep(keep)
            columns.real, positions, token = columns.real[living], positions[living], token[keep]
            batch = [batch[b] for b in living]
        columns.real[:, columns.filled] = True
        columns.positions = mx.array(positions, mx.int32)
        token = pick(model(token, cache=cache)[:, -1])[:, None]
        columns.filled += 1
        positions = positions + 1
        for r, t in zip(batch, token.tolist()):
            if not rows[r].done:
                rows[r].take(t[0], eos)
    return [r.tokens for r in rows]
