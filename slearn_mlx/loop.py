"""The self-learning loop over a run folder: diagnose -> select -> train -> evaluate -> report.

Each stage reads what the previous one wrote in the run folder and writes its own files,
so a stage can run alone (`slearn_mlx train RUN`) and a rerun skips finished stages.

    RUN/config.json        the resolved configuration (a different one is refused)
    RUN/versions.json      software and device
    RUN/records.jsonl      the dataset as loaded, with ids and the held-out flag
    RUN/diagnosis.jsonl    the base model's answers and grades
    RUN/selection.jsonl    the records chosen for training, with the reason
    RUN/adapter/           LoRA adapter (mlx_lm --adapter-path), train_log.jsonl
    RUN/evaluation.jsonl   the adapted model's answers and grades
    RUN/stages.json        wall time of each finished stage
    RUN/metrics.json, RUN/report.md
"""

import hashlib
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__, blas
from .artifacts import read_json, read_rows, write_atomic, write_json
from .data import Record, default_dataset, holdout_ids, load_records
from .evaluate import accuracy_table, answer_and_grade
from .grade import JUDGE_THRESHOLD, JUDGED_KINDS, judge
from .models import load_model, resolve_model, runs_on_cpu
from .report import render_report
from .select import select_records
from .train import TrainConfig, train_lora

STAGES = ("diagnose", "select", "train", "evaluate")


class RunError(ValueError):
    """A run folder that cannot be used as asked."""


@dataclass
class RunConfig:
    data: str
    model: str
    policy: str = "unknown"
    held_out_fraction: float = 0.2
    seed: int = 0
    answer_batch_size: int = 64
    judge_model: str | None = None  # default: the model being adapted, without adapter
    judge_kinds: list[str] = field(default_factory=lambda: sorted(JUDGED_KINDS))  # kinds graded by the judge
    judge_threshold: float = JUDGE_THRESHOLD
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_json(cls, obj: dict) -> "RunConfig":
        return cls(**{**obj, "train": TrainConfig(**obj["train"])})


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_fingerprint(config: RunConfig) -> str:
    payload = json.dumps({**asdict(config), "data_sha256": file_digest(Path(config.data))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def resolve_config(data: str | None, model: str | None, **options) -> RunConfig:
    """Fill in the defaults and turn paths absolute, so the config names exactly what ran."""
    data_path = Path(data).resolve() if data else default_dataset()
    return RunConfig(data=str(data_path), model=str(resolve_model(model).resolve()), **options)


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{Path(config.data).stem}-{Path(config.model).name}-{config.policy}-{config_fingerprint(config)}"


def versions() -> dict:
    import mlx.core as mx
    from importlib.metadata import version

    return {
        "slearn_mlx": __version__,
        "mlx": version("mlx"),
        "mlx_lm": version("mlx-lm"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": str(mx.default_device()),
        "cpu_float32_dequantized": runs_on_cpu(),
        "openblas": blas.loaded_openblas,
    }


def create_run(config: RunConfig, run_dir: Path) -> Path:
    """Create the run folder, or reopen it when it was made with the same configuration."""
    records = load_records(Path(config.data))  # bad data stops here, before any model work
    config_path = run_dir / "config.json"
    wanted = {**asdict(config), "data_sha256": file_digest(Path(config.data))}
    if config_path.exists():
        if read_json(config_path) != wanted:
            raise RunError(f"{run_dir} holds a run with a different configuration or data; choose another --out")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a run folder; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    held_out = holdout_ids(records, config.held_out_fraction, config.seed)
    lines = [json.dumps({**r.to_json(), "held_out": r.id in held_out}, ensure_ascii=False) for r in records]
    write_atomic(run_dir / "records.jsonl", "\n".join(lines) + "\n")
    write_json(run_dir / "versions.json", versions())
    write_json(config_path, wanted)
    return run_dir


def load_run(run_dir: Path) -> tuple[RunConfig, list[Record], set[str]]:
    if not (run_dir / "config.json").exists():
        raise RunError(f"{run_dir}: not a run folder (no config.json); start one with `adapt` or `diagnose`")
    obj = read_json(run_dir / "config.json")
    obj.pop("data_sha256")
    rows = read_rows(run_dir / "records.jsonl")
    held_out = {row["id"] for row in rows if row.pop("held_out")}
    return RunConfig.from_json(obj), [Record(**row) for row in rows], held_out


def finished_stages(run_dir: Path) -> dict:
    path = run_dir / "stages.json"
    return read_json(path) if path.exists() else {}


def mark_finished(run_dir: Path, stage: str, seconds: float, **facts) -> None:
    stages = finished_stages(run_dir)
    stages[stage] = {"seconds": round(seconds, 2), **facts}
    write_json(run_dir / "stages.json", stages)


def make_judge(config: RunConfig, loaded=None):
    """The judge is loaded on first use only: rule-gradable datasets never pay for it."""
    cache = {"model": loaded}

    def run_judge(items):
        if cache["model"] is None:
            cache["model"] = load_model(resolve_model(config.judge_model or config.model))
        model, tokenizer = cache["model"]
        return judge(model, tokenizer, items, config.judge_threshold)

    return run_judge


def diagnose(run_dir: Path) -> None:
    """Answer and grade every record with the base model."""
    config, records, _ = load_run(run_dir)
    start = time.perf_counter()
    model, tokenizer = load_model(Path(config.model))
    same_judge = config.judge_model is None
    rows = answer_and_grade(
        model, tokenizer, records, run_dir / "diagnosis.jsonl",
        make_judge(config, (model, tokenizer) if same_judge else None), config.answer_batch_size, "diagnose",
        frozenset(config.judge_kinds),
    )
    mark_finished(run_dir, "diagnose", time.perf_counter() - start, records=len(rows),
                  correct=sum(r["correct"] for r in rows))


def select(run_dir: Path) -> None:
    config, records, held_out = load_run(run_dir)
    start = time.perf_counter()
    diagnosis = read_rows(run_dir / "diagnosis.jsonl")
    if len(diagnosis) != len(records):
        raise RunError(f"{run_dir}: the diagnosis is not finished; run `diagnose` first")
    selected = select_records(records, diagnosis, held_out, config.policy)
    write_atomic(run_dir / "selection.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in selected))
    mark_finished(run_dir, "select", time.perf_counter() - start, selected=len(selected))


def train(run_dir: Path) -> None:
    config, records, _ = load_run(run_dir)
    start = time.perf_counter()
    selected = read_rows(run_dir / "selection.jsonl")
    if not selected:
        # Nothing unknown: the model already answers everything; there is nothing to teach.
        mark_finished(run_dir, "train", time.perf_counter() - start, examples=0)
        return
    by_id = {r.id: r for r in records}
    shutil.rmtree(run_dir / "adapter", ignore_errors=True)  # an interrupted training starts over
    model, tokenizer = load_model(Path(config.model))
    facts = train_lora(model, tokenizer, [(by_id[s["id"]], s["target"]) for s in selected],
                       config.train, run_dir / "adapter")
    mark_finished(run_dir, "train", time.perf_counter() - start, **facts)


def evaluate(run_dir: Path) -> dict:
    """Answer and grade every record again with the adapter; write metrics.json and report.md."""
    config, records, held_out = load_run(run_dir)
    start = time.perf_counter()
    adapter = run_dir / "adapter"
    model, tokenizer = load_model(Path(config.model), adapter if (adapter / "adapters.safetensors").exists() else None)
    after = answer_and_grade(model, tokenizer, records, run_dir / "evaluation.jsonl", make_judge(config),
                             config.answer_batch_size, "evaluate", frozenset(config.judge_kinds))
    mark_finished(run_dir, "evaluate", time.perf_counter() - start, records=len(after))
    return write_metrics(run_dir)


def write_metrics(run_dir: Path) -> dict:
    config, records, held_out = load_run(run_dir)
    before = read_rows(run_dir / "diagnosis.jsonl")
    after = read_rows(run_dir / "evaluation.jsonl")
    trained = {s["id"] for s in read_rows(run_dir / "selection.jsonl")}
    stages = finished_stages(run_dir)
    metrics = {
        "run": str(run_dir),
        "policy": config.policy,
        "records": len(records),
        "accuracy": accuracy_table(before, after, trained, held_out),
        "stage_seconds": {s: stages[s]["seconds"] for s in STAGES if s in stages},
        "stages": stages,
    }
    metrics["total_seconds"] = round(sum(metrics["stage_seconds"].values()), 2)
    write_json(run_dir / "metrics.json", metrics)
    write_atomic(run_dir / "report.md", render_report(metrics, config, records, before, after))
    return metrics


def adapt(config: RunConfig, run_dir: Path) -> dict:
    """The whole loop; stages already finished in run_dir are not redone."""
    create_run(config, run_dir)
    stage_functions = {"diagnose": diagnose, "select": select, "train": train, "evaluate": evaluate}
    for stage in STAGES:
        if stage not in finished_stages(run_dir):
            stage_functions[stage](run_dir)
    return write_metrics(run_dir)
