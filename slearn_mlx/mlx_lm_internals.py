"""Every place slearn-mlx relies on mlx-lm beyond its documented API, in one module, so that a release
that changes one of them fails tests/test_mlx_lm_internals.py before it fails a user:
- a model's parts: its body (`.model`) and its output step (`lm_head`, or the tied embeddings, divided by
  granite's `logits_scaling`), which the cheaper forward passes call apart (forward.plan checks them);
- the KV cache protocol mlx-lm's attention layers call: `offset` (RoPE), `update_and_fetch`,
  `make_mask` and `state`; `SharedPrefixCache` (training) and `RowsCache` (decoding) implement it, and
  `plain_kv_caches` tells the models whose every layer keeps mlx-lm's plain KVCache;
- the module-level `swiglu` name an architecture's MLP calls (`replace_swiglu`);
- BatchGenerator's request API, for the models whose caches decode.py does not keep.
pyproject.toml bounds mlx-lm to the releases these were tested on; scripts/test-newest-mlx-lm.sh runs
the suite against the newest one. Building a model from its config.json goes through mlx-lm's public
`load_model` (models.architecture).
"""

import copy
import sys
from collections.abc import Callable

import mlx.core as mx
import numpy as np
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache, create_attention_mask, make_prompt_cache


def body(model):
    """The model without its output step (mlx-lm models keep it as `.model`)."""
    return model.model


def output_head(model):
    """The output step as most mlx-lm models write it: their own lm_head, or the tied embeddings
    (lfm2 and tied gemma3 have no lm_head at all), divided by granite's logits_scaling."""
    if hasattr(model, "lm_head"):
        project = model.lm_head
    else:
        project = getattr(getattr(getattr(model, "model", None), "embed_tokens", None), "as_linear", None)
    scaling = getattr(model, "logits_scaling", None)
    if project is None or scaling is None:
        return project
    return lambda hidden: project(hidden) / scaling


def plain_kv_caches(model) -> bool:
    """Whether every layer of the model keeps mlx-lm's plain KVCache (no sliding window, no convolution state)."""
    return all(type(c) is KVCache for c in make_prompt_cache(model))


def replace_swiglu(model, swiglu) -> bool:
    """Point the model's architecture at another swiglu, where its MLP calls mlx-lm's by the name its module
    imported; whether it did."""
    from mlx_lm.models import activations

    module = sys.modules[type(model).__module__]
    if getattr(module, "swiglu", None) is not activations.swiglu:
        return False
    module.swiglu = swiglu
    return True


class SharedPrefixCache:
    """One layer's keys and values of a prefix every row shares: computed for one row, broadcast to
    the batch when the rows attend to it. mlx-lm's KVCache writes a buffer in place; this one only
    keeps and concatenates arrays, so gradients flow back through the prefix as well."""

    def __init__(self):
        self.keys = self.values = None
        self.offset = 0

    def update_and_fetch(self, keys, values):
        if self.keys is None:  # the prefix itself
            self.keys, self.values, self.offset = keys, values, keys.shape[2]
            return keys, values
        rows = keys.shape[0]
        return (mx.concatenate([mx.broadcast_to(self.keys, (rows, *self.keys.shape[1:])), keys], axis=2),
                mx.concatenate([mx.broadcast_to(self.values, (rows, *self.values.shape[1:])), values], axis=2))

    def make_mask(self, n, return_array=False, window_size=None):
        return create_attention_mask(n, self.offset, return_array, window_size)


class Columns:
    """What the layers of a decoded batch share: the columns filled so far, which of them each row attends
    to, and the position each row's next token takes."""

    def __init__(self, rows: int, capacity: int):
        self.filled = 0
        self.real = np.zeros((rows, capacity), bool)
        self.positions: mx.array | int = 0  # the next new token's position: per row, or one for all
        self.prefix = False  # the forward pass in progress is the shared prefix, one row for all

    def mask(self, n: int):
        """Which columns each of the next n tokens attends to: the row's real ones, and causally among the new."""
        if self.prefix:
            return "causal"
        end = self.filled + n
        real = mx.array(self.real[:, :end])[:, None, None, :]
        if n == 1:
            return real
        causal = mx.arange(end)[None, :] <= (mx.arange(n) + self.filled)[:, None]
        return real & causal[None, None]


class RowsCache:
    """One layer's keys and values for a batch of rows, in a buffer as long as the longest row can get.
    The offset the model adds to positions (RoPE) and the attention mask come from the shared Columns."""

    def __init__(self, columns: Columns):
        self.columns = columns
        self.keys = self.values = None

    @property
    def offset(self):
        return self.columns.positions

    def update_and_fetch(self, keys, values):
        start = self.columns.filled
        end = start + keys.shape[2]
        if self.keys is None:
            rows, capacity = self.columns.real.shape
            self.keys = mx.zeros((rows, keys.shape[1], capacity, keys.shape[3]), keys.dtype)
            self.values = mx.zeros((rows, values.shape[1], capacity, values.shape[3]), values.dtype)
        self.keys[..., start:end, :] = keys  # the prefix's one row is broadcast to every row
        self.values[..., start:end, :] = values
        if self.columns.prefix:
            return keys, values
        return self.keys[..., :end, :], self.values[..., :end, :]

    def make_mask(self, n: int, return_array: bool = False, window_size=None):
        return self.columns.mask(n)

    def keep(self, rows: mx.array):
        self.keys, self.values = self.keys[rows], self.values[rows]

    @property
    def state(self):
        return self.keys, self.values


def prefix_caches(model, prefix: list[int], copies: int) -> list[list] | None:
    """The KV cache of a prefix, computed once, copied for each record (None: nothing to share)."""
    cache = make_prompt_cache(model)
    if not prefix or not all(hasattr(c, "merge") for c in cache):  # a cache type mlx-lm cannot batch
        return None
    model(mx.array([prefix]), cache=cache)
    mx.eval([c.state for c in cache])
    return [copy.deepcopy(cache) for _ in range(copies)]


def batch_generator_tokens(model, eos: list[int], prompts: list[list[int]], shared: int, budgets: list[int],
                           stops: list[Callable[[list[int]], bool]], sampler) -> list[list[int]]:
    """decode.decode's answers through mlx-lm's BatchGenerator, for the models whose caches decode.py does
    not keep (sliding windows, convolution states): slower, and without drafts. `shared`: how many
    leading tokens the prompts share."""
    caches = prefix_caches(model, prompts[0][:shared], len(prompts))
    if caches is None:
        shared = 0
    generator = BatchGenerator(model, stop_tokens=[[t] for t in eos], sampler=sampler,
                               prefill_batch_size=len(prompts), completion_batch_size=len(prompts))
    uids = generator.insert([p[shared:] for p in prompts], budgets, caches=caches)
    tokens = {uid: [] for uid in uids}
    stop_of = dict(zip(uids, stops))
    while responses := generator.next_generated():
        finished = []
        for response in responses:
            if response.finish_reason == "stop":  # the end-of-sequence token itself is not text
                continue
            tokens[response.uid].append(response.token)
            if response.finish_reason is None and stop_of[response.uid](tokens[response.uid]):
                finished.append(response.uid)
        if finished:
            generator.remove(finished)
    generator.close()
    return [tokens[uid] for uid in uids]
