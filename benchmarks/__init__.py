"""Benchmarks, run by hand (`python -m benchmarks.NAME`); each says what it ran and where."""

import os
import platform
import sys
from pathlib import Path


def reference_training(tokenizer, records: list) -> tuple[list, list]:
    """The records as train_lora trains them on their bare references, one epoch's selection, and each
    one's span (tokens, where the answer starts): the same work for every side a benchmark compares."""
    from dataclasses import replace

    from slearn_mlx.probe import target_span
    from slearn_mlx.train import Example

    examples = [Example(r, r.answer, r.answer, known=False, selected=True) for r in records]
    # the end-of-turn is learned too, as train_lora trains it
    spans = [replace(s, end=len(s.tokens)) for s in (target_span(tokenizer, r, r.answer) for r in records)]
    return examples, spans


def print_provenance(module: str) -> None:
    """The command as typed and the machine and software it ran on: the first lines of every output."""
    from slearn_mlx.blas import setup

    setup()  # a no-op when the script did it first; else before versions() imports mlx, as it did before
    from slearn_mlx.run import versions

    print("command:", " ".join([Path(sys.executable).name, "-m", module, *sys.argv[1:]]))
    print("machine:", platform.platform(), platform.processor() or "", os.cpu_count(), "cpus", versions())


def kappa(labels: list[bool], verdicts: list[bool]) -> float | None:
    """Cohen's kappa of two binary raters; None when chance agreement is total (both gave one and the
    same class throughout), where kappa is 0/0: perfect agreement that chance explains entirely."""
    n = len(labels)
    observed = sum(a == b for a, b in zip(labels, verdicts)) / n
    p_label, p_verdict = sum(labels) / n, sum(verdicts) / n
    chance = p_label * p_verdict + (1 - p_label) * (1 - p_verdict)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def best_threshold(labels: list[bool], scores: list[float]) -> float:
    """The threshold (to 3 decimals) at which `score >= threshold` agrees best with the labels by kappa,
    an undefined kappa counting least; ties: the lowest."""
    def agreement(threshold: float) -> float:
        value = kappa(labels, [s >= threshold for s in scores])
        return -1.0 if value is None else value

    return max(sorted({round(s, 3) for s in scores}), key=lambda t: (agreement(t), -t))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
