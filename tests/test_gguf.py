"""The GGUF importer, on a tiny model written in llama.cpp's layout by the test itself."""

import json
import re

import mlx.core as mx
import pytest
from mlx_lm.utils import load

from slearn_mlx.gguf import GGUFImportError, TENSOR_NAMES, TOP_LEVEL_NAMES, import_gguf

GGUF_NAMES = {v: k for k, v in {**TENSOR_NAMES, **TOP_LEVEL_NAMES}.items()}


def permute_rope_rows(x, n_heads):
    """What llama.cpp's converter does to Q and K (convert_hf_to_gguf.py `permute`)."""
    return x.reshape(n_heads, 2, x.shape[0] // n_heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def gguf_name(mlx_name):
    stem, leaf = mlx_name.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, layer, part = stem.split(".", 3)
        return f"blk.{layer}.{GGUF_NAMES[part]}.{leaf}"
    return f"{GGUF_NAMES[stem]}.{leaf}"


def write_gguf(model_dir, path, architecture="llama", pre="gpt2"):
    weights = mx.load(str(model_dir / "model.safetensors"))
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    tensors = {}
    for name, value in weights.items():
        part = name.split(".")[-2]
        tensors[gguf_name(name)] = permute_rope_rows(value, heads[part]) if part in heads else value
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tokenizer["added_tokens"]}
    u32 = lambda v: mx.array(v, dtype=mx.uint32)
    metadata = {
        "general.architecture": architecture,
        "general.name": "tiny",
        "llama.embedding_length": u32(config["hidden_size"]),
        "llama.block_count": u32(config["num_hidden_layers"]),
        "llama.feed_forward_length": u32(config["intermediate_size"]),
        "llama.attention.head_count": u32(config["num_attention_heads"]),
        "llama.attention.head_count_kv": u32(config["num_key_value_heads"]),
        "llama.attention.layer_norm_rms_epsilon": mx.array(config["rms_norm_eps"], dtype=mx.float32),
        "llama.rope.freq_base": mx.array(config["rope_theta"], dtype=mx.float32),
        "llama.context_length": u32(512),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [t for t, _ in vocab],
        "tokenizer.ggml.token_type": mx.array([3 if t in specials else 1 for t, _ in vocab], dtype=mx.int32),
        "tokenizer.ggml.merges": [" ".join(m) if isinstance(m, list) else m for m in tokenizer["model"]["merges"]],
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.chat_template": json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"],
    }
    if pre is not None:
        metadata["tokenizer.ggml.pre"] = pre
    mx.save_gguf(str(path), tensors, metadata)
    return path


def test_imported_model_computes_what_the_original_computes(tiny_model, tmp_path):
    out = import_gguf(write_gguf(tiny_model, tmp_path / "tiny.gguf"), tmp_path / "imported")
    original, original_tok = load(str(tiny_model))
    imported, imported_tok = load(str(out))
    text = "What is the capital of France? 0123"
    assert imported_tok.encode(text) == original_tok.encode(text)
    chat = [{"role": "user", "content": "hi"}]
    assert imported_tok.apply_chat_template(chat, add_generation_prompt=True) == \
        original_tok.apply_chat_template(chat, add_generation_prompt=True)
    tokens = mx.array([original_tok.encode(text)])
    assert mx.allclose(imported(tokens), original(tokens), atol=1e-4).item()
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert not (tmp_path / "imported.partial").exists()


def test_other_architectures_are_refused_by_name(tiny_model, tmp_path):
    path = write_gguf(tiny_model, tmp_path / "other.gguf", architecture="qwen2")
    with pytest.raises(GGUFImportError, match="only llama-architecture.*'qwen2'"):
        import_gguf(path, tmp_path / "imported")


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFImportError, match="broken.gguf: not a readable GGUF"):
        import_gguf(path, tmp_path / "imported")


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", None])
def test_a_pre_tokenizer_it_cannot_rebuild_exactly_is_refused_by_name(tiny_model, tmp_path, pre):
    path = write_gguf(tiny_model, tmp_path / "other.gguf", pre=pre)
    with pytest.raises(GGUFImportError, match=re.escape(f"(tokenizer.ggml.pre) is '{pre or '(none)'}'") + ".*mlx_lm convert"):
        import_gguf(path, tmp_path / "imported")
    assert not (tmp_path / "imported").exists() and not (tmp_path / "imported.partial").exists()


def test_a_digit_splitting_pre_tokenizer_is_rebuilt(tiny_model, tmp_path):
    out = import_gguf(write_gguf(tiny_model, tmp_path / "smollm.gguf", pre="smollm"), tmp_path / "imported")
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert [step["type"] for step in tokenizer["pre_tokenizer"]["pretokenizers"]] == ["Digits", "ByteLevel"]
