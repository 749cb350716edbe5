import mlx.core as mx

from conftest import one_at_a_time, qa_rows
from slearn_mlx import answer
from slearn_mlx.answer import answer_batch, answer_batch_size, generate_batch
from slearn_mlx.decode import decode
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


def test_drafts_change_no_answer_whether_the_model_says_them_or_not(tiny_model, monkeypatch):
    """A draft the model agrees with, one it departs from at once or halfway, one longer than the budget:
    the answers are plain greedy decoding's, in any kind, and a batch where most rows finish early
    (the living rows gathered) too. Drafts are taken here as on a GPU."""
    monkeypatch.setattr(answer, "drafts_pay", lambda: True)
    drafted = []
    monkeypatch.setattr(answer, "decode", lambda *a, **k: drafted.append(a[7]) or decode(*a, **k))
    model, tokenizer = load_model(tiny_model)
    for kind in ("short", "long", "mcq"):
        batch = records(kind) * 3
        alone = [one_at_a_time(model, tokenizer, r) for r in batch[:5]] * 3
        said = generate_batch(model, tokenizer, batch)
        assert [text for text, _ in said] == alone
        long_draft = said[0][1] + [5] * 200
        drafts = [tokens for _, tokens in said[:5]] + [text + " and more" for text in alone[:5]] + [
            said[0][1][:len(said[0][1]) // 2] + [7, 8], "Item", None, long_draft, ""]
        assert [text for text, _ in generate_batch(model, tokenizer, batch, drafts=drafts)] == alone
        assert drafted[-1][0] == said[0][1] and drafted[-1][-1] == []  # taken, as tokens


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


def test_the_answer_batch_fits_the_memory_there_is_and_uses_it(tiny_model, monkeypatch):
    """Told how much memory is free, the batch chosen answers within it, as measured by MLX's peak, and
    is not needlessly small: twice as many records need more than the half of it the sizing aims at."""
    model, tokenizer = load_model(tiny_model)
    batch = [Record(id=str(i), question=q["question"], answer=q["answer"], kind="short") for i, q in enumerate(qa_rows(64))]
    answer_batch(model, tokenizer, batch[:2])  # the first call's one-off allocations are not the batch's

    def peak_of(size: int) -> int:
        mx.clear_cache()
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        answer_batch(model, tokenizer, batch[:size])
        return mx.get_peak_memory() - before

    sizes = []
    for free in (2_000_000, 8_000_000):
        monkeypatch.setattr(answer, "available_memory", lambda: free)
        sizes.append(answer_batch_size(model))
        assert 1 < sizes[-1] < answer.MAX_ANSWER_BATCH  # the memory decided, not the bounds
        assert peak_of(sizes[-1]) <= free < 2 * peak_of(2 * sizes[-1])
    assert sizes[0] < sizes[1]
    monkeypatch.setattr(answer, "available_memory", lambda: 10**12)
    assert answer_batch_size(model) == answer.MAX_ANSWER_BATCH
    monkeypatch.setattr(answer, "available_memory", lambda: 0)
    assert answer_batch_size(model) == 1
