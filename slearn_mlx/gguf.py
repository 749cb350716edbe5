"""Import a llama-architecture GGUF file into an MLX model folder that `mlx_lm.load` reads.

`mx.load` already parses GGUF: Q4_0/Q4_1/Q8_0 tensors arrive as MLX affine-quantized
triples (weight, scales, biases). What is left is naming, layout and the tokenizer:
- tensor names map from llama.cpp's (`blk.N.attn_q`) to mlx-lm's (`model.layers.N.self_attn.q_proj`);
- llama.cpp permutes the rows of Q and K for its interleaved RoPE; we undo that so the
  folder is a plain Hugging Face-layout llama (standard RoPE, fusable and exportable);
- the tokenizer (GPT-2 style byte-level BPE) is rebuilt as a `tokenizer.json`, only when its
  pre-tokenizer (`tokenizer.ggml.pre`, how llama.cpp splits text before BPE) is one rebuilt
  exactly here; any other would import with wrong tokens and no warning, so it is refused.
The weights stay quantized as they were in the file; `models.load_model` decides whether
to dequantize them for the device.
"""

import json
from pathlib import Path

import mlx.core as mx

TENSOR_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_LEVEL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
CONTROL_TOKEN_TYPE = 3
# llama.cpp's pre-tokenizers rebuilt exactly, by whether digits are split one by one before GPT-2's
# regex (llama.cpp's STARCODER group; SmolLM2's own tokenizer.json does the same). Llama-3, Qwen,
# DeepSeek and the rest use other regexes.
EXACT_PRE_TOKENIZERS = {"gpt2": False, "smollm": True, "starcoder": True, "refact": True}
ALTERNATIVE = ("convert the original model instead, `python -m mlx_lm convert --hf-path REPO_OR_FOLDER "
               "--mlx-path DIR`, and pass --model DIR")


class GGUFImportError(ValueError):
    pass


def _scalar(meta, key, default=None):
    value = meta.get(key, default)
    if value is None:
        raise GGUFImportError(f"GGUF metadata has no '{key}'")
    return value.item() if hasattr(value, "item") else value


def mlx_name(gguf_name: str) -> str:
    """`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`."""
    stem, leaf = gguf_name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        if part not in TENSOR_NAMES:
            raise GGUFImportError(f"unknown GGUF tensor '{gguf_name}'")
        return f"model.layers.{layer}.{TENSOR_NAMES[part]}.{leaf}"
    if stem not in TOP_LEVEL_NAMES:
        raise GGUFImportError(f"unknown GGUF tensor '{gguf_name}'")
    return f"{TOP_LEVEL_NAMES[stem]}.{leaf}"


def unpermute_rope_rows(x: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation.

    convert_hf_to_gguf.py does `w.reshape(n_heads, 2, rows // n_heads // 2, ...).swapaxes(1, 2)`;
    this is its inverse. Rows are permuted whole, so quantized triples permute exactly.
    """
    rows = x.shape[0]
    return x.reshape(n_heads, rows // n_heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def model_config(meta: dict, weights: dict) -> dict:
    arch = _scalar(meta, "general.architecture")
    if arch != "llama":
        raise GGUFImportError(f"only llama-architecture GGUF files are supported, this one is '{arch}'")
    n_heads = int(_scalar(meta, "llama.attention.head_count"))
    hidden = int(_scalar(meta, "llama.embedding_length"))
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_scalar(meta, "llama.attention.head_count_kv", n_heads)),
        "head_dim": int(_scalar(meta, "llama.rope.dimension_count", hidden // n_heads)),
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length", 2048)),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
    }
    quantization = {}
    for gguf_name, scales in weights.items():
        if not gguf_name.endswith(".scales"):
            continue
        stem = gguf_name[: -len(".scales")]
        # llama.cpp's block quants (Q4_0, Q4_1, Q8_0) all use blocks of 32 values, so the
        # bits follow from packed 32-bit words per row over groups per row.
        bits = weights[f"{stem}.weight"].shape[-1] // scales.shape[-1]
        group_size = 32
        quantization[mlx_name(f"{stem}.weight")[: -len(".weight")]] = {"group_size": group_size, "bits": bits}
    if quantization:
        # mlx-lm wants a default plus per-layer overrides; the most common setting is the default.
        settings = [json.dumps(q, sort_keys=True) for q in quantization.values()]
        default = json.loads(max(set(settings), key=settings.count))
        config["quantization"] = dict(default, **{k: v for k, v in quantization.items() if v != default})
    return config


def tokenizer_files(meta: dict) -> tuple[dict, dict]:
    """Build `tokenizer.json` and `tokenizer_config.json` from the GGUF tokenizer metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if _scalar(meta, "tokenizer.ggml.model") != "gpt2":
        raise GGUFImportError(f"only GPT-2 style byte-level BPE tokenizers are supported; {ALTERNATIVE}")
    # Without the key (files before llama.cpp recorded it) the split is unknown, not GPT-2's.
    pre = _scalar(meta, "tokenizer.ggml.pre", "(none)")
    if pre not in EXACT_PRE_TOKENIZERS:
        raise GGUFImportError(f"the tokenizer's pre-tokenizer (tokenizer.ggml.pre) is '{pre}', which this importer "
                              f"cannot rebuild exactly (only {', '.join(EXACT_PRE_TOKENIZERS)}); {ALTERNATIVE}")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = meta["tokenizer.ggml.token_type"].tolist()
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tokenizer = Tokenizer(bpe)
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if EXACT_PRE_TOKENIZERS[pre]:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, kind in zip(tokens, types) if kind == CONTROL_TOKEN_TYPE])

    def token(key):
        index = meta.get(key)
        return None if index is None else tokens[int(index.item())]

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id") or token("tokenizer.ggml.eos_token_id"),
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(_scalar(meta, "llama.context_length", 2048)),
        "clean_up_tokenization_spaces": False,
    }
    if "tokenizer.chat_template" in meta:
        tokenizer_config["chat_template"] = meta["tokenizer.chat_template"]
    return json.loads(tokenizer.to_str()), tokenizer_config


def import_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write an MLX model folder (config, safetensors, tokenizer) from a llama GGUF file."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    try:
        weights, meta = mx.load(str(gguf_path), return_metadata=True)
    except Exception as e:  # mx.load says little; name the file
        raise GGUFImportError(f"{gguf_path}: not a readable GGUF file ({e})") from e
    config = model_config(meta, weights)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    mlx_weights = {}
    for name, value in weights.items():
        part = name.split(".")[2] if name.startswith("blk.") else None
        if part in heads:
            value = unpermute_rope_rows(value, heads[part])
        mlx_weights[mlx_name(name)] = value
    tokenizer_json, tokenizer_config = tokenizer_files(meta)

    # Write into a temporary sibling and rename, so a half-written folder is never mistaken for a model.
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), mlx_weights, metadata={"format": "mlx"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (tmp / "source.json").write_text(json.dumps({"imported_from": str(gguf_path),
                                                  "gguf_name": _scalar(meta, "general.name", "")}, indent=2))
    tmp.rename(out_dir)
    return out_dir
