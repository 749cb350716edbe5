"""The architectures a Mac user picks, each as a tiny random-weight model with its family's chat template:
`adapt` end to end, the judge, answering, the trained spans and `fuse` on every one of them.

Each template keeps what sets its family apart (turn markers, start token, default system prompt,
Qwen3's think block, Phi-3's closing end-of-text, Gemma's model role) and leaves out tools and dates.
"""

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache, make_prompt_cache
from mlx_lm.utils import load

from conftest import build_model, build_tokenizer, one_at_a_time, qa_rows, write_jsonl
from slearn_mlx import answer
from slearn_mlx.answer import answer_batch, generate_batch
from slearn_mlx.prompts import chat_tokens, prompt_messages
from slearn_mlx.artifacts import read_json, read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import parse_record
from slearn_mlx.forward import plan
from slearn_mlx.judge import judge, judge_prompt, verdict_token_ids
from slearn_mlx.run import STAGES
from slearn_mlx.models import load_model, lora_parameter_count
from slearn_mlx.probe import target_span

# The blocks' shapes at their smallest: 2 blocks (3 for lfm2: conv, attention, conv), 64 wide.
SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TURNS = r"{%- for m in messages %}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endfor %}"
CHATML_PROMPT = r"{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"


@dataclass
class Family:
    config: dict
    chat_template: str
    special_tokens: list[str]
    roles: dict  # bos_token, eos_token, ... as the family's tokenizer_config names them
    stop_tokens: list[str]  # config.json's eos_token_id: where generation stops
    dropped: tuple[str, ...] = ()
    plain_kv_cache: bool = True  # every layer's cache a plain KVCache: prefixes can be shared


FAMILIES = {
    "llama": Family(  # Llama 3.x
        dict(SHAPE, model_type="llama", tie_word_embeddings=True),
        r"{{- bos_token }}{%- if messages[0].role == 'system' %}{%- set system = messages[0].content | trim %}"
        r"{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
        r"{{- '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n' + system"
        r" + '<|eot_id|>' }}{%- for m in messages %}{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n'"
        r" + m.content | trim + '<|eot_id|>' }}{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}",
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, ["<|end_of_text|>", "<|eot_id|>"]),
    "qwen2": Family(  # Qwen2.5
        dict(SHAPE, model_type="qwen2", tie_word_embeddings=True),
        r"{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."
        r" You are a helpful assistant.<|im_end|>\n' }}{%- endif %}" + CHATML_TURNS + CHATML_PROMPT,
        CHATML_TOKENS, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, ["<|im_end|>", "<|endoftext|>"]),
    "qwen3": Family(  # hybrid reasoning: an answer after the last question opens with a think block
        dict(SHAPE, model_type="qwen3", head_dim=16, tie_word_embeddings=True),
        r"{%- for m in messages %}{%- if m.role == 'assistant' and loop.last %}"
        r"{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m.content + '<|im_end|>\n' }}{%- else %}"
        r"{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
        r"{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
        r"{%- endif %}",
        [*CHATML_TOKENS, "<think>", "</think>"], {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        ["<|im_end|>"]),
    # Gemma 3 1B: sliding-window layers (a rotating cache) beside global ones; a window of 8 is shorter
    # than the prompt prefix answering shares (14 tokens), so the copied prefix cache has wrapped already.
    "gemma3_text": Family(
        dict(SHAPE, model_type="gemma3_text", head_dim=16, num_key_value_heads=1, query_pre_attn_scalar=16,
             sliding_window=8, sliding_window_pattern=2, rms_norm_eps=1e-6),
        r"{{ bos_token }}{%- if messages[0].role == 'system' %}{%- set prefix = messages[0].content + '\n\n' %}"
        r"{%- set messages = messages[1:] %}{%- else %}{%- set prefix = '' %}{%- endif %}"
        r"{%- for m in messages %}{{ '<start_of_turn>' + ('model' if m.role == 'assistant' else m.role) + '\n'"
        r" + (prefix if loop.first else '') + m.content | trim + '<end_of_turn>\n' }}{%- endfor %}"
        r"{%- if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{%- endif %}",
        ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        ["<eos>", "<end_of_turn>"], dropped=("lm_head.weight",), plain_kv_cache=False),
    "phi3": Family(  # Phi-3.5 / Phi-4 mini: fused qkv and gate-up projections, untied head
        dict(SHAPE, model_type="phi3", tie_word_embeddings=False),
        r"{%- for m in messages %}{{ '<|' + m.role + '|>\n' + m.content + '<|end|>\n' }}{%- endfor %}"
        r"{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- else %}{{ eos_token }}{%- endif %}",
        ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, ["<|endoftext|>", "<|end|>"]),
    "olmo2": Family(
        dict(SHAPE, model_type="olmo2", tie_word_embeddings=False),
        r"{{ bos_token }}{%- for m in messages %}{%- if m.role == 'assistant' %}"
        r"{{ '<|assistant|>\n' + m.content + eos_token + ('' if loop.last else '\n') }}{%- else %}"
        r"{{ '<|' + m.role + '|>\n' + m.content + '\n' }}{%- endif %}"
        r"{%- if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}{%- endfor %}",
        ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"],
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}, ["<|endoftext|>"]),
    "granite": Family(  # Granite 3.x: logits divided by logits_scaling after the head
        dict(SHAPE, model_type="granite", logits_scaling=8.0, attention_multiplier=0.25, embedding_multiplier=12.0,
             residual_multiplier=0.22, attention_bias=False, mlp_bias=False, tie_word_embeddings=True),
        r"{%- if messages[0].role != 'system' %}{{- '<|start_of_role|>system<|end_of_role|>You are Granite,"
        r" developed by IBM. You are a helpful AI assistant.<|end_of_text|>\n' }}{%- endif %}"
        r"{%- for m in messages %}{{- '<|start_of_role|>' + m.role + '<|end_of_role|>' + m.content"
        r" + '<|end_of_text|>\n' }}{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}",
        ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"],
        {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<|end_of_text|>"},
        ["<|end_of_text|>"]),
    "lfm2": Family(  # LFM2: short-convolution blocks (conv state in the cache) around attention, no lm_head
        {"model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512, "norm_eps": 1e-5, "conv_bias": False,
         "conv_L_cache": 3, "block_dim": 64, "block_ff_dim": 128, "block_multiple_of": 16,
         "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": True,
         "layer_types": ["conv", "full_attention", "conv"]},
        r"{{- bos_token }}" + CHATML_TURNS + CHATML_PROMPT,
        ["<|pad|>", "<|startoftext|>", "<|endoftext|>", *CHATML_TOKENS[1:]],
        {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}, ["<|im_end|>"],
        plain_kv_cache=False),
}
# Embeddings shrunk so that the blocks decide the next token and answers say something (build_model).
EMBEDDING_SCALE = 0.25


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    family = FAMILIES[name]
    folder = tmp_path_factory.mktemp("families") / f"tiny-{name}"
    folder.mkdir()
    tokenizer = build_tokenizer(folder, family.special_tokens, family.roles, family.chat_template)
    return name, build_model(folder, family.config, tokenizer, family.stop_tokens, embedding_scale=EMBEDDING_SCALE,
                             dropped=family.dropped)


@pytest.fixture(scope="module")
def loaded(family_model):
    return load_model(family_model[1])


@pytest.fixture(scope="module")
def family_run(family_model, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("family-run")
    data = write_jsonl(tmp / "data.jsonl", qa_rows(12))
    result = CliRunner().invoke(cli, ["adapt", str(data), "--model", str(family_model[1]), "--out", str(tmp / "run"),
                                      "--epochs", "1", "--batch-size", "4", "--learning-rate", "1e-2",
                                      "--judge-kind", "short"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "run"


def records(n: int = 3):
    return [parse_record(row, "test") for row in qa_rows(n)]


def test_adapt_runs_every_stage_and_adapts_every_block(family_model, family_run):
    _, model_dir = family_model
    stages = read_json(family_run / "stages.json")
    assert set(stages) == set(STAGES) - {"sample"}
    assert len(read_rows(family_run / "evaluation.jsonl")) == 12
    assert (family_run / "report.html").exists()
    adapted, _ = load(str(model_dir), adapter_path=str(family_run / "adapter"))
    blocks = {name.split(".layers.")[1].split(".")[0] for name, _ in tree_flatten(adapted.trainable_parameters())
              if "lora_a" in name}
    assert len(blocks) == len(adapted.layers)  # 16 blocks asked for, every one of the tiny model's
    adapter = mx.load(str(family_run / "adapter" / "adapters.safetensors"))
    # what the disk check counted before the run started, on the architecture alone
    assert sum(a.size for a in adapter.values()) == lora_parameter_count(read_json(model_dir / "config.json"), 16, 8)


def test_the_judge_gives_the_probabilities_of_the_models_own_forward_pass(loaded):
    model, tokenizer = loaded
    items = [(r, f"{r.answer} it is") for r in records()]
    yes, no = verdict_token_ids(tokenizer)
    for grade, item in zip(judge(model, tokenizer, items), items):
        logits = model(mx.array([judge_prompt(tokenizer, *item)]))[0, -1].astype(mx.float32)
        expected = mx.sigmoid(mx.logsumexp(logits[mx.array(yes)]) - mx.logsumexp(logits[mx.array(no)])).item()
        assert grade.score == pytest.approx(expected, abs=1e-5)


def test_the_cheaper_forward_pass_is_taken_where_it_gives_the_models_own_logits(family_model, loaded):
    model, _ = loaded
    forward = plan(model)
    assert forward.head is not None  # every family's output step is found, granite's scaling included
    assert forward.share_prefix == FAMILIES[family_model[0]].plain_kv_cache
    assert all(type(c) is KVCache for c in make_prompt_cache(model)) == FAMILIES[family_model[0]].plain_kv_cache


def test_a_batch_answers_as_one_prompt_at_a_time(loaded, monkeypatch):
    monkeypatch.setattr(answer, "drafts_pay", lambda: True)  # drafts taken, as on a GPU
    model, tokenizer = loaded
    batch = [parse_record({"question": f"What is the capital of France? {i}", "answer": "Paris"}, "test")
             for i in range(4)]
    alone = [one_at_a_time(model, tokenizer, r) for r in batch]
    assert answer_batch(model, tokenizer, batch) == alone
    assert any(alone)  # the random model says something, so the comparison is not of empty strings
    # drafts right, wrong from the first token, right for a while then wrong, and none: the same answers
    said = generate_batch(model, tokenizer, batch)
    drafts = [said[0][1], "Paris", said[2][1][:2] + tokenizer.encode(" Paris", add_special_tokens=False), None]
    assert [text for text, _ in generate_batch(model, tokenizer, batch, drafts=drafts)] == alone


def test_training_scores_the_target_after_the_prompt_the_model_answers(loaded):
    _, tokenizer = loaded
    record = records(1)[0]
    span = target_span(tokenizer, record, "Item 0, the first")
    prompt = chat_tokens(tokenizer, prompt_messages(record), True)
    assert span.tokens[:span.start] == prompt
    assert tokenizer.decode(span.tokens[span.start:span.end]) == "Item 0, the first"


def test_the_fused_model_computes_base_plus_adapter(family_model, family_run, tmp_path):
    _, model_dir = family_model
    result = CliRunner().invoke(cli, ["fuse", str(family_run), "--out", str(tmp_path / "fused")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tokens = mx.array([list(range(3, 40))])
    adapted, _ = load(str(model_dir), adapter_path=str(family_run / "adapter"))
    fused, _ = load(str(tmp_path / "fused"))
    base, _ = load(str(model_dir))
    # float32 rounding of W + scale * B A against the two apart reached 1.0e-4 (qwen2); training moved logits by 0.3 or more
    assert mx.allclose(fused(tokens), adapted(tokens), atol=1e-3).item()
    assert not mx.allclose(base(tokens), adapted(tokens), atol=1e-3).item()  # training changed something
