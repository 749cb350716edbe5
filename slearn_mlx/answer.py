"""Ask the model in this process every question: batched greedy generation.

Answering is the cost the method must keep small (benchmarks/diagnosis.py measures it against a
training epoch), so a batch:
- computes the prompt prefix its records share (system prompt, template) once, for every record;
- prefills and decodes all its records together, through decode.py where the model's caches allow
  (mlx-lm's BatchGenerator otherwise), and takes an expected answer as a draft when there is one;
- holds as many records as memory allows, up to the size past which answering got slower;
- stops a short answer at the end of its first sentence: graders read the first sentence
  (on 400 cached trivia and acronym answers, cutting there changed no grade) and SmolLM2
  otherwise rambles on to the token budget.
"""

import os
from collections.abc import Callable

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

from .data import Record
from .decode import decode, drafts_pay, greedy
from .forward import plan, shared_prefix
from .mlx_lm_internals import batch_generator_tokens, plain_kv_caches
from .prompts import FIRST_SENTENCE_END, MAX_NEW_TOKENS, chat_tokens, first_answer, prompt_messages, question_text

# What answers a batch of records at a temperature: the model in this process, or a server (backends.py).
Answerer = Callable[[list[Record], float], list[str]]


def generate_batch(model, tokenizer, records: list[Record], temperature: float = 0.0,
                   drafts: list[str | list[int] | None] | None = None) -> list[tuple[str, list[int]]]:
    """(answer, the tokens the model said it in) for a batch of records, in order: greedy, or sampled
    at a temperature. The tokens are kept because the tokenizer may split the same text otherwise
    ("MVD" as M, VD where the model said M, V, D), and the check after a training epoch asks whether
    the model would say exactly them again. `drafts`, the answers expected of the records, are taken
    where drafts pay (greedy, on a GPU: decode.drafts_pay): checked in one teacher-forced pass, with
    decoding going on from where the model departs from them. The answers are the same either way."""
    prompts = [chat_tokens(tokenizer, prompt_messages(r), True) for r in records]
    budgets = [MAX_NEW_TOKENS[r.kind] for r in records]
    stops = [ends_first_sentence(tokenizer) if r.kind == "short" else never for r in records]
    sampler = make_sampler(temp=temperature) if temperature > 0 else None
    shared = shared_prefix(prompts)
    if plain_kv_caches(model):
        draft_tokens = [draft_of(tokenizer, d) for d in drafts] if drafts and not sampler and drafts_pay() else None
        tokens = decode(model, plan(model), prompts[0][:shared], [p[shared:] for p in prompts], budgets, stops,
                        set(tokenizer.eos_token_ids), draft_tokens, sampler or greedy)
    else:
        tokens = batch_generator_tokens(model, tokenizer.eos_token_ids, prompts, shared, budgets, stops, sampler)
    return [said(tokenizer, t, r.kind == "short") for t, r in zip(tokens, records)]


def ends_first_sentence(tokenizer) -> Callable[[list[int]], bool]:
    return lambda tokens: bool(FIRST_SENTENCE_END.search(tokenizer.decode(tokens)))


def never(tokens: list[int]) -> bool:
    return False


def draft_of(tokenizer, draft: str | list[int] | None) -> list[int]:
    """A draft as tokens: given as the tokens the model said it in, or as text."""
    if not draft:
        return []
    return list(draft) if isinstance(draft, list) else tokenizer.encode(draft, add_special_tokens=False)


def answer_batch(model, tokenizer, records: list[Record], temperature: float = 0.0) -> list[str]:
    """Answers for a batch of records, in order: greedy, or sampled at a temperature."""
    return [text for text, _ in generate_batch(model, tokenizer, records, temperature)]


def said(tokenizer, tokens: list[int], short: bool) -> tuple[str, list[int]]:
    """The answer a model's tokens give, and the tokens that say exactly it ([] when the answer ends
    inside a token)."""
    text = first_answer(tokenizer.decode(tokens), short)
    end = next((k for k in range(len(tokens), 0, -1) if tokenizer.decode(tokens[:k]).strip() == text), 0)
    return text, tokens[:end]


# On 2 CPU cores, 256 default records took 62 s in batches of 32, 54 s in 64, 62 s in 128, 74 s in 256.
MAX_ANSWER_BATCH = 64
# Peak memory grew by the cache of one record's first 256 positions for every record added to a batch
# (decode.py on the tiny test llama: 0.89-1.0x; SmolLM2-135M, float32: 0.42x, 5 MB a record, and with
# 32-token drafts the logits read at each draft token add about half as much again).
MEMORY_PER_KV = 1.0


def available_memory() -> int:
    if mx.metal.is_available():
        return mx.device_info()["max_recommended_working_set_size"] - mx.get_active_memory()
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def cache_bytes(model) -> int:
    """One record's cache over its first 256 positions, read from the model's own caches after one token:
    KV layers hold 256 positions then, sliding-window layers at most their window, convolution layers
    their fixed state, whatever the architecture and the dtype it runs in."""
    cache = make_prompt_cache(model)
    model(mx.array([[0]]), cache=cache)
    mx.eval([c.state for c in cache])
    return sum(c.nbytes for c in cache)


def answer_batch_size(model) -> int:
    """Records answered at once: as many as half the free memory holds, up to MAX_ANSWER_BATCH."""
    return max(1, min(MAX_ANSWER_BATCH, int(available_memory() / 2 // (MEMORY_PER_KV * cache_bytes(model)))))


def generate(model, tokenizer, records: list[Record], temperature: float = 0.0,
             drafts: list | None = None) -> list[tuple[str, list[int]]]:
    """generate_batch over any number of records, in batches as large as memory allows."""
    size = answer_batch_size(model)
    drafts = drafts or [None] * len(records)
    return [pair for i in range(0, len(records), size)
            for pair in generate_batch(model, tokenizer, records[i : i + size], temperature, drafts[i : i + size])]


def in_process(model, tokenizer) -> Answerer:
    def answer(records: list[Record], temperature: float = 0.0) -> list[str]:
        return [text for text, _ in generate(model, tokenizer, records, temperature)]
    return answer


def by_length(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (len(question_text(r)), r.id))


def length_sorted_batches(records: list[Record], batch_size: int) -> list[list[Record]]:
    """Similar-length prompts together waste less compute on padding."""
    ordered = by_length(records)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
