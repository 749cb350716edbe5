"""Fixtures: a tiny random-weight llama and tokenizer built here, so most tests run in seconds; the
builders make the other architectures of test_architectures.py too."""

import importlib
import json
from pathlib import Path

import pytest

from slearn_mlx import blas

blas.setup()  # OpenBLAS before mlx, as the command does

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten
from mlx_lm.generate import generate_step

from slearn_mlx.prompts import MAX_NEW_TOKENS, chat_tokens, first_answer, prompt_messages

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


CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_ROLES = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                "pad_token": "<|im_end|>"}


def build_tokenizer(folder: Path, special_tokens: list[str] = CHATML_SPECIAL_TOKENS, roles: dict = CHATML_ROLES,
                    chat_template: str = CHATML):
    """A byte-level BPE trained on a few sentences, with a chat template and its special tokens (their ids
    in the order given, from 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", **roles, "chat_template": chat_template,
    }))
    return tokenizer


def build_model(folder: Path, config: dict, tokenizer, stop_tokens: list[str], seed: int = 0,
                embedding_scale: float = 1.0, dropped: tuple[str, ...] = ()) -> Path:
    """Random weights of any mlx-lm architecture, saved as a model folder beside its tokenizer.

    embedding_scale multiplies the token embeddings: at 1, a tied-embedding model's next token is mostly
    the last prompt token again (a line break, forever, which an answer strips to nothing).
    `dropped` weights are left out, as a checkpoint with tied embeddings leaves out lm_head."""
    stops = [tokenizer.token_to_id(t) for t in stop_tokens]
    config = dict(config, vocab_size=tokenizer.get_vocab_size(), eos_token_id=stops[0] if len(stops) == 1 else stops)
    architecture = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = architecture.Model(architecture.ModelArgs.from_dict(config))
    weights = {name: w * embedding_scale if "embed_tokens" in name else w
               for name, w in tree_flatten(model.parameters()) if name not in dropped}
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return build_model(folder, TINY_CONFIG, build_tokenizer(folder), ["<|im_end|>"], seed)


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


def one_at_a_time(model, tokenizer, record) -> str:
    """mlx-lm's own greedy decoding of one prompt, decoded whole as answer_batch decodes (mlx-lm's streaming
    decoder writes a random model's stray bytes otherwise)."""
    tokens = []
    prompt = mx.array(chat_tokens(tokenizer, prompt_messages(record), True))
    for token, _ in generate_step(prompt, model, max_tokens=MAX_NEW_TOKENS[record.kind]):
        if token in tokenizer.eos_token_ids:
            break
        tokens.append(token)
    return first_answer(tokenizer.decode(tokens), record.kind == "short")


def rows_the_model_knows(model_path: Path, rows: list[dict]) -> list[dict]:
    """`rows` where a row whose question the model answers in words has that greedy answer as its reference
    (a random model also says bytes that are no text): the tiny random model knows nothing else, so these
    are the records its diagnosis finds known. Each row's kind is written out, so that the answer is asked
    with the token budget it was made with."""
    from slearn_mlx.answer import answer_batch
    from slearn_mlx.data import parse_record
    from slearn_mlx.grade import auto_grade
    from slearn_mlx.models import load_model

    model, tokenizer = load_model(model_path)
    rows = [{"kind": "short", **row} for row in rows]
    answers = answer_batch(model, tokenizer, [parse_record(row, "row") for row in rows])
    said = [parse_record({**row, "answer": answer or "-"}, "row") for row, answer in zip(rows, answers)]
    credited = [g.correct for g in auto_grade(said, answers)]
    assert 2 <= sum(credited) <= len(rows) - 2, answers  # known and unknown records both
    return [{**row, "answer": answer} if right else row for row, answer, right in zip(rows, answers, credited)]
