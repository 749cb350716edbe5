"""Merge a run's LoRA adapter into a standalone model folder, and optionally export GGUF.

Built from mlx-lm's own pieces (`load` with the adapter, each LoRA layer's `fuse`, `save`,
`convert_to_gguf`), the same ones `mlx_lm.fuse` uses. The fused model is always dequantized:
the adapter was trained on the dequantized weights (a CPU's default) or on the quantized ones
(Metal), whose dequantized values are what the quantized kernels multiply by, and quantizing
again after the merge can round away a small LoRA update; `mlx_lm.convert -q` re-quantizes the
folder when wanted.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.gguf import convert_to_gguf
from mlx_lm.utils import dequantize_model, load, save

from .run import RunError, load_run

# The architectures mlx-lm's GGUF export handles (the list `mlx_lm.fuse --export-gguf` checks).
GGUF_ARCHITECTURES = ("llama", "mixtral", "mistral")
GGUF_NAME = "model-f16.gguf"


@dataclass
class Fused:
    folder: Path
    gguf: Path | None
    warnings: list[str]


def byte_level_tokenizer(folder: Path) -> bool:
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    return "ByteLevel" in json.dumps(tokenizer.get("pre_tokenizer"))


def fuse_run(run_dir: Path, out: Path | None = None, gguf: bool = False) -> Fused:
    config = load_run(run_dir).config
    adapter = run_dir / "adapter"
    if not (adapter / "adapters.safetensors").exists():
        raise RunError(f"{run_dir}: no trained adapter (adapter/adapters.safetensors); run `train` first")
    out = out or run_dir / "fused"
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not empty; choose another --out")
    model, tokenizer, model_config = load(config.model, adapter_path=str(adapter), return_config=True)
    if gguf and model_config["model_type"] not in GGUF_ARCHITECTURES:
        raise RunError(f"mlx-lm exports GGUF for {', '.join(GGUF_ARCHITECTURES)} only; "
                       f"this model is '{model_config['model_type']}' (the fused MLX folder still works)")

    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    model.update_modules(tree_unflatten(fused))
    model = dequantize_model(model)  # the layers without an adapter (embeddings, ...) too
    model_config.pop("quantization", None)
    model_config.pop("quantization_config", None)
    save(out, config.model, model, tokenizer, model_config, donate_model=False)

    warnings = []
    gguf_path = None
    if gguf:
        gguf_path = out / GGUF_NAME
        convert_to_gguf(out, dict(tree_flatten(model.parameters())), model_config, str(gguf_path))
        if byte_level_tokenizer(out):
            # mlx-lm labels every exported tokenizer SentencePiece ("llama"); the weights are right,
            # but llama.cpp-based tools would split text into the wrong tokens for a byte-level BPE.
            warnings.append("this model's tokenizer is byte-level BPE, but mlx-lm's GGUF export labels it "
                            "SentencePiece: llama.cpp-based tools may tokenize wrongly; the MLX folder is exact")
    return Fused(out, gguf_path, warnings)
