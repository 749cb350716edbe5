"""Fixtures: a tiny random-weight llama and tokenizer built here, so most tests run in seconds."""

import json
from pathlib import Path

import pytest

import slearn_mlx  # noqa: F401  (preloads OpenBLAS before mlx)

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import llama

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Answer with the letter of the correct option. A) red B) blue C) green D) yellow",
    "Reply yes or no. Is the student answer correct? Reference answer: question",
    "Central Processing Unit, Random Access Memory, Graphics Processing Unit, 0123456789",
]
TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}


def build_tokenizer(folder: Path) -> int:
    """A byte-level BPE trained on a few sentences, with ChatML special tokens; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>", "chat_template": CHATML,
    }))
    return tokenizer.get_vocab_size()


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(TINY_CONFIG, vocab_size=build_tokenizer(folder), eos_token_id=2)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory):
    """No test may reach a model hub or touch the developer's model store; the store starts empty,
    so the first use of the default model in the session imports it from its GGUF."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("SLEARN_MLX_MODELS", str(tmp_path_factory.mktemp("store")))
        yield


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def qa_rows(n: int) -> list[dict]:
    return [{"question": f"What is item number {i}?", "answer": f"Item {i}"} for i in range(n)]
