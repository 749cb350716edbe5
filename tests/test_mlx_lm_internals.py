"""What slearn-mlx takes from mlx-lm beyond its documented API (slearn_mlx/mlx_lm_internals.py), held on
every architecture of test_architectures.py: an mlx-lm release that changes one fails here first."""

import mlx.core as mx
import pytest

from conftest import one_at_a_time
from slearn_mlx import mlx_lm_internals as internals
from slearn_mlx.data import parse_record
from slearn_mlx.decode import greedy
from slearn_mlx.prompts import MAX_NEW_TOKENS, chat_tokens, prompt_messages
from test_architectures import FAMILIES, family_model, loaded  # noqa: F401  (fixtures)

# What mlx-lm's attention layers and model bodies may ask of a cache we give them ("bits": whether it is a
# quantized cache, which ours are not).
CACHE_PROTOCOL = {"offset", "update_and_fetch", "make_mask", "state", "bits"}


class Spy:
    """A cache that notes every attribute mlx-lm's code asks of it."""

    def __init__(self, inner, used: set):
        self._inner, self._used = inner, used

    def __getattr__(self, name):
        self._used.add(name)
        return getattr(self._inner, name)


def test_body_and_output_head_give_the_models_own_logits(loaded):
    model, _ = loaded
    tokens = mx.array([list(range(3, 20))])
    head = internals.output_head(model)
    assert head is not None
    assert mx.allclose(head(internals.body(model)(tokens)), model(tokens), atol=1e-4).item()


def test_our_caches_are_asked_only_for_the_protocol_and_give_the_models_own_logits(family_model, loaded):
    model, _ = loaded
    if not FAMILIES[family_model[0]].plain_kv_cache:
        assert not internals.plain_kv_caches(model)
        pytest.skip("decode.py and the shared prefix serve plain KV caches only")
    assert internals.plain_kv_caches(model)
    tokens = mx.array([list(range(3, 20))] * 2)
    used = set()
    # SharedPrefixCache: a prefix once, then rows attending to it
    shared = [Spy(internals.SharedPrefixCache(), used) for _ in model.layers]
    model(tokens[:1, :8], cache=shared)
    assert mx.allclose(model(tokens[:, 8:], cache=shared), model(tokens)[:, 8:], atol=1e-4).item()
    # RowsCache: the same prefix, then each row's tokens with its own positions
    columns = internals.Columns(2, 32)
    rows = [Spy(internals.RowsCache(columns), used) for _ in model.layers]
    columns.prefix = True
    model(tokens[:1, :8], cache=rows)
    columns.prefix, columns.filled, columns.positions = False, 8, 8
    columns.real[:, :17] = True
    assert mx.allclose(model(tokens[:, 8:], cache=rows), model(tokens)[:, 8:], atol=1e-4).item()
    assert used <= CACHE_PROTOCOL, used - CACHE_PROTOCOL


def test_our_swiglu_replaces_the_one_an_architecture_calls(loaded):
    model, _ = loaded
    module = __import__(type(model).__module__, fromlist=["swiglu"])
    before = getattr(module, "swiglu", None)
    calls = []
    try:
        replaced = internals.replace_swiglu(model, lambda gate, x: calls.append(1) or before(gate, x))
        model(mx.array([[3, 4, 5]]))
        assert replaced == bool(calls)  # where the architecture has mlx-lm's swiglu, ours is what runs
    finally:
        if before is not None:
            module.swiglu = before


def test_batch_generator_answers_as_mlx_lm_decodes_one_prompt(loaded):
    model, tokenizer = loaded
    records = [parse_record({"question": f"What is the capital of France? {i}", "answer": "Paris"}, "t")
               for i in range(3)]
    prompts = [chat_tokens(tokenizer, prompt_messages(r), True) for r in records]
    tokens = internals.batch_generator_tokens(model, tokenizer.eos_token_ids, prompts, 0,
                                              [MAX_NEW_TOKENS["long"]] * 3, [lambda t: False] * 3, greedy)
    assert [tokenizer.decode(t).strip() for t in tokens] == [one_at_a_time(model, tokenizer, parse_record(
        {"question": r.question, "answer": "Paris", "kind": "long"}, "t")) for r in records]
