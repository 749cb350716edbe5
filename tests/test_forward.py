"""The cheaper forward pass gives the model's own logits and gradients."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.utils import linear_to_lora_layers

from conftest import qa_rows
from slearn_mlx.data import parse_record
from slearn_mlx.forward import MIN_SHARED_PREFIX, Plan, answer_logits, pack, plan
from slearn_mlx.models import load_model
from slearn_mlx.probe import target_span


def lora_model(tiny_model):
    model, tokenizer = load_model(tiny_model)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    mx.random.seed(3)  # adapters that change the output, so that gradients reach every part
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    return model, tokenizer


def spans_of(tokenizer, n=5):
    records = [parse_record(row, "test") for row in qa_rows(n)]
    return [target_span(tokenizer, r, f"{r.answer} is the answer, {i} times") for i, r in enumerate(records)]


def full_forward_loss(model, spans):
    """Cross-entropy of the scored tokens, one row at a time through the model's own forward pass."""
    total, count = 0.0, 0
    for s in spans:
        logits = model(mx.array([s.tokens[:s.end - 1]]))[0, s.start - 1:s.end - 1]
        total = total + nn.losses.cross_entropy(logits, mx.array(s.tokens[s.start:s.end])).sum()
        count += s.end - s.start
    return total / count


def packed_loss(model, packed, forward):
    logits = answer_logits(model, packed, forward)
    return (nn.losses.cross_entropy(logits, packed.targets) * packed.mask).sum() / packed.mask.sum()


def test_the_plan_takes_both_shortcuts_on_a_llama(tiny_model):
    model, _ = lora_model(tiny_model)
    forward = plan(model)
    assert forward.head is not None and forward.share_prefix


def test_shared_prefix_and_answer_positions_give_the_full_forward_passs_loss_and_gradients(tiny_model):
    model, tokenizer = lora_model(tiny_model)
    spans = spans_of(tokenizer)
    packed = pack(spans)
    assert packed.prefix is not None and len(packed.prefix) >= MIN_SHARED_PREFIX  # the chat template's start
    assert packed.inputs.shape[1] < max(len(s.tokens) for s in spans) - MIN_SHARED_PREFIX
    expected_loss, expected = nn.value_and_grad(model, lambda m: full_forward_loss(m, spans))(model)
    for forward in (plan(model), Plan(None, False)):  # the shortcuts, and the model's own output on every position
        got_loss, got = nn.value_and_grad(model, lambda m: packed_loss(m, pack(spans, forward.share_prefix), forward))(model)
        assert abs(got_loss.item() - expected_loss.item()) < 1e-4
        for (name, a), (_, b) in zip(tree_flatten(got), tree_flatten(expected)):
            assert mx.allclose(a, b, atol=1e-4).item(), name


def test_a_model_whose_output_step_differs_runs_without_the_shortcut(tiny_model):
    model, _ = lora_model(tiny_model)
    call = type(model).__call__

    class Scaled(type(model)):  # an output step of its own, as granite's logits scaling is
        def __call__(self, *args, **kwargs):
            return call(self, *args, **kwargs) / 4.0

    model.__class__ = Scaled
    assert plan(model).head is None
