"""Who answers and who judges in a run: the model in this process (mlx-lm), or an OpenAI-compatible
server at --base-url serving the same model. The kinds are told apart here and nowhere else.

A server is asked the same chat messages with the same token budgets as the model in this process,
at temperature 0, and its answers get the same cut (a short answer ends after its first sentence),
so a server running the same model gives the same rows. The evaluation and the check after each
epoch answer in this process whatever the backend: the adapter in training is on no server. A package
can add a backend of its own (BACKENDS).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .answer import Answerer, in_process
from .data import Record
from .grade import Grader, Judge, auto_grade, graders_by_kind
from .judge import judge, judge_on_server
from .models import load_model, resolve_model
from .openai_api import Backend, check_server, complete, parallel
from .plugins import Registry
from .prompts import MAX_NEW_TOKENS, first_answer, prompt_messages


def answer_on_server(backend: Backend, records: list[Record], temperature: float = 0.0,
                     concurrency: int = 4) -> list[str]:
    """Answers for a batch of records, in order, at most `concurrency` requests at a time."""
    def one(record: Record) -> str:
        choice = complete(backend, prompt_messages(record), MAX_NEW_TOKENS[record.kind], temperature)
        # As answering in this process does: a server cannot be told to stop after a sentence.
        return first_answer(choice.get("message", {}).get("content") or "", record.kind == "short")

    return parallel(one, records, concurrency)


def in_process_answerer(backend: Backend, model: Path, concurrency: int) -> tuple[Answerer, tuple | None]:
    loaded = load_model(model)
    return in_process(*loaded), loaded


def server_answerer(backend: Backend, model: Path, concurrency: int) -> tuple[Answerer, tuple | None]:
    check_server(backend)
    return lambda records, temperature=0.0: answer_on_server(backend, records, temperature, concurrency), None


def in_process_judge(backend: Backend, model: str, threshold: float, concurrency: int, loaded) -> Judge:
    """The judge model is loaded on first use only: data the rules grade never pays for it."""
    cache = {"model": loaded}

    def run_judge(items):
        if cache["model"] is None:
            cache["model"] = load_model(resolve_model(model))
        return judge(*cache["model"], items, threshold)
    return run_judge


def server_judge(backend: Backend, model: str, threshold: float, concurrency: int, loaded) -> Judge:
    check_server(backend)
    return lambda items: judge_on_server(backend, items, concurrency, threshold)


@dataclass(frozen=True)
class BackendKind:
    # (backend, model, concurrency) -> the answerer, and the (model, tokenizer) it loaded, if any
    answerer: Callable[[Backend, Path, int], tuple[Answerer, tuple | None]]
    # (backend, judge model, threshold, concurrency, a (model, tokenizer) in memory to judge with) -> judge
    judge: Callable[[Backend, str, float, int, tuple | None], Judge]
    remote: bool  # reached at a base URL: the model is not in this process


# By --backend's name; a package adds its own under the entry-point group slearn_mlx.backends (plugins.py).
BACKENDS = Registry("backend", "slearn_mlx.backends", BackendKind, {
    "mlx": BackendKind(in_process_answerer, in_process_judge, remote=False),
    "openai": BackendKind(server_answerer, server_judge, remote=True)})


def grader(config, loaded=None) -> Grader:
    """auto_grade with the run's judge and graders. `loaded` is the (model, tokenizer) of the run's model
    when it is already in memory: the default judge, which then needs no second copy."""
    run_judge = BACKENDS[config.judge_backend.kind].judge(config.judge_backend, config.judge_model or config.model,
                                                       config.judge_threshold, config.concurrency,
                                                       None if config.judge_model else loaded)
    judged_kinds = frozenset(config.judge_kinds)
    graders = graders_by_kind(config.graders)
    return lambda records, responses: auto_grade(records, responses, run_judge, judged_kinds, graders)


def base_answerer_and_grader(config) -> tuple[Answerer, Grader]:
    """The base model's answerer on the run's backend (the diagnosis, SliCK's samples, the restatements),
    and the run's grader."""
    answer, loaded = BACKENDS[config.backend.kind].answerer(config.backend, Path(config.model), config.concurrency)
    return answer, grader(config, loaded)
