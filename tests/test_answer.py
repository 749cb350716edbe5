from conftest import one_at_a_time, qa_rows
from slearn_mlx import answer
from slearn_mlx.answer import answer_batch, answer_batch_size
from slearn_mlx.prompts import first_answer
from slearn_mlx.forward import shared_prefix
from slearn_mlx.data import Record
from slearn_mlx.models import load_model


def records(kind: str) -> list[Record]:
    return [Record(id=str(i), question=q["question"] + " " * i, answer=q["answer"], kind=kind)
            for i, q in enumerate(qa_rows(5))]


def test_a_batch_with_a_shared_prefix_cache_answers_as_one_prompt_at_a_time(tiny_model):
    model, tokenizer = load_model(tiny_model)
    for kind in ("short", "long"):
        batch = records(kind)
        alone = [one_at_a_time(model, tokenizer, r) for r in batch]
        assert answer_batch(model, tokenizer, batch) == alone
        assert any(alone)  # the random model says something, so the comparison is not of empty strings


def test_the_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[7], [7, 8]]) == 0
    assert shared_prefix([[9, 8, 7]]) == 2


def test_a_short_answer_ends_with_its_first_sentence():
    text = "The novel was written by A.A. Nabokov in 1944. It was a dystopian\nmasterpiece"
    assert first_answer(text, short=True) == "The novel was written by A.A. Nabokov in 1944."
    assert first_answer("Dr. No is the villain! Then", short=True) == "Dr. No is the villain!"
    assert first_answer(" pH 7.4 is normal", short=True) == "pH 7.4 is normal"
    assert first_answer("ECG\nmore", short=True) == "ECG"
    assert first_answer(text, short=False) == text


def test_the_answer_batch_shrinks_to_the_memory_there_is(tiny_model, monkeypatch):
    model, _ = load_model(tiny_model)
    monkeypatch.setattr(answer, "available_memory", lambda: 10**12)
    assert answer_batch_size(model) == answer.MAX_ANSWER_BATCH
    # The tiny model's cache for 256 positions: 2 layers x K and V x 2 heads x 16 dims x 4 bytes.
    kv_bytes = 2 * 2 * 2 * 16 * 256 * 4
    monkeypatch.setattr(answer, "available_memory", lambda: int(2 * 5 * answer.MEMORY_PER_KV * kv_bytes) + 1)
    assert answer_batch_size(model) == 5
    monkeypatch.setattr(answer, "available_memory", lambda: 0)
    assert answer_batch_size(model) == 1
