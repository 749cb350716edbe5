"""The self-learning loop over a run folder: diagnose -> (sample) -> (restate) -> select -> train -> evaluate.

Each stage reads what the previous one wrote in the run folder and writes its own files,
so a stage can run alone (`slearn_mlx train RUN`) and a rerun skips finished stages.
Under mlx.launch every rank runs the stages that answer (sharded) and train (data-parallel);
only rank 0 writes the shared files (distributed.py).

    RUN/config.json        the resolved configuration (a different one is refused)
    RUN/versions.json      software and device
    RUN/records.jsonl      the dataset as loaded, with ids and split (train/validation/held_out)
    RUN/diagnosis.jsonl    the base model's greedy answers and grades
    RUN/samples.jsonl      SliCK only: grades of answers sampled at a temperature
    RUN/restatements.jsonl the unknown training records answered again with the reference shown (targets.py)
    RUN/selection.jsonl    every training record: its target, whether the first epoch trains it, and why
    RUN/adapter/           LoRA adapter (mlx_lm --adapter-path), train_log.jsonl (epochs, checks, who left and returned)
    RUN/evaluation.jsonl   the adapted model's answers and grades
    RUN/stages.json        wall time of each finished stage
    RUN/metrics.json, RUN/report.md, RUN/report.html
"""

import hashlib
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

from . import __version__, blas, distributed, server
from .answer import generate, in_process
from .artifacts import read_json, read_rows, write_atomic, write_json
from .data import Record, assign_splits, default_dataset, load_records
from .grade import Grader
from .metrics import accuracy_table, epoch_summary, trained_ids
from .rows import answer_and_grade, graded, rows_for, sample_and_grade
from .grade import JUDGE_THRESHOLD, JUDGED_KINDS, auto_grade, judge
from .models import dequantizes, load_model, resolve_model
from .html_report import render_html
from .forward import plan
from .probe import probe_batch
from .report import render_report
from .select import SelectConfig, select_records
from .targets import restate as restated
from .train import Example, TrainConfig, adapter_disk_bytes, train_lora

STAGES = ("diagnose", "sample", "restate", "select", "train", "evaluate")


class RunError(ValueError):
    """A run folder that cannot be used as asked."""


class ConfigError(ValueError):
    """A configuration that cannot run."""


@dataclass
class RunConfig:
    data: str
    model: str
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    held_out_fraction: float = 0.2
    validation_fraction: float = 0.1
    seed: int = 0
    diagnosis: str = "generate"  # or "probe": score the reference under teacher forcing, no generation
    probe_threshold: float = -1.0  # probe: mean log-probability of the reference at which it counts as known
    answer_batch_size: int = 64
    judge_model: str | None = None  # default: the model being adapted, without adapter
    judge_kinds: list[str] = field(default_factory=lambda: sorted(JUDGED_KINDS))  # kinds graded by the judge
    judge_threshold: float = JUDGE_THRESHOLD
    # Who answers in the diagnosis (and SliCK's sampling), and who judges free-form answers.
    # The evaluation and validation answer in-process: the adapter in training is on no server.
    backend: server.Backend = field(default_factory=server.Backend)
    judge_backend: server.Backend = field(default_factory=server.Backend)
    concurrency: int = 4  # requests in flight to a server

    @classmethod
    def from_json(cls, obj: dict) -> "RunConfig":
        select = SelectConfig(**{**obj["select"], "slick_keep": tuple(obj["select"]["slick_keep"])})
        backends = {name: server.Backend(**obj[name]) for name in ("backend", "judge_backend") if name in obj}
        return cls(**{**obj, "select": select, "train": TrainConfig(**obj["train"]), **backends})

    def to_json(self) -> dict:
        """As config.json holds it (tuples become lists), so a reread config compares equal."""
        return json.loads(json.dumps({**asdict(self), "data_sha256": file_digest(Path(self.data))}))


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_fingerprint(config: RunConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode()).hexdigest()[:8]


def resolve_config(data: str | None, model: str | None, **options) -> RunConfig:
    """Fill in the defaults and turn paths absolute, so the config names exactly what ran."""
    data_path = Path(data).resolve() if data else default_dataset()
    config = RunConfig(data=str(data_path), model=str(resolve_model(model).resolve()), **options)
    for name, backend in [("--backend", config.backend), ("--judge-backend", config.judge_backend)]:
        if backend.kind == "openai" and not backend.base_url:
            raise ConfigError(f"{name} openai needs the server's URL (--base-url / --judge-base-url)")
    if config.diagnosis == "probe" and config.backend.kind != "mlx":
        raise ConfigError("--diagnosis probe scores the reference inside the model: it needs --backend mlx")
    return config


def default_run_dir(config: RunConfig, label: str | None = None) -> Path:
    name = f"{Path(config.data).stem}-{Path(config.model).name}-{label or config.select.policy}"
    return Path("runs") / f"{name}-{config_fingerprint(config)}"


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
        "cpu_float32_dequantized": dequantizes(),
        "blas": blas.loaded,
    }


def create_run(config: RunConfig, run_dir: Path, force: bool = False) -> Path:
    """Create the run folder, or reopen it when it was made with the same configuration.

    A run folder of another configuration is never reused; with `force` it is replaced.
    """
    records = load_records(Path(config.data))  # bad data stops here, before any model work
    config_path = run_dir / "config.json"
    if config_path.exists() and read_json(config_path) != config.to_json():
        if not force:
            raise RunError(f"{run_dir} holds a run with a different configuration or data; "
                           "choose another --out, or replace it with --force")
        shutil.rmtree(run_dir)
    if config_path.exists():
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a run folder; choose another --out")
    check_disk(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = assign_splits(records, config.held_out_fraction, config.validation_fraction, config.seed)
    lines = [json.dumps({**r.to_json(), "split": splits[r.id]}, ensure_ascii=False) for r in records]
    write_atomic(run_dir / "records.jsonl", "\n".join(lines) + "\n")
    write_json(run_dir / "versions.json", versions())
    write_json(config_path, config.to_json())
    return run_dir


def check_disk(config: RunConfig, run_dir: Path) -> None:
    """Refuse to start a run the disk cannot hold: the adapter files and three copies' worth of records."""
    need = adapter_disk_bytes(read_json(Path(config.model) / "config.json"), config.train)
    need += 3 * Path(config.data).stat().st_size
    existing = next(p for p in [run_dir, *run_dir.absolute().parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < need:
        raise RunError(f"{run_dir}: the run needs about {need / 1e6:.0f} MB and {existing} has {free / 1e6:.0f} MB free")


@dataclass
class Run:
    dir: Path
    config: RunConfig
    records: list[Record]
    splits: dict[str, str]

    def ids(self, split: str) -> set[str]:
        return {i for i, s in self.splits.items() if s == split}

    def records_in(self, split: str) -> list[Record]:
        return [r for r in self.records if self.splits[r.id] == split]


def load_run(run_dir: Path) -> Run:
    if not (run_dir / "config.json").exists():
        raise RunError(f"{run_dir}: not a run folder (no config.json); start one with `adapt` or `diagnose`")
    obj = read_json(run_dir / "config.json")
    obj.pop("data_sha256")
    rows = read_rows(run_dir / "records.jsonl")
    splits = {row["id"]: row.pop("split") for row in rows}
    return Run(run_dir, RunConfig.from_json(obj), [Record(**row) for row in rows], splits)


def finished_stages(run_dir: Path) -> dict:
    path = run_dir / "stages.json"
    return read_json(path) if path.exists() else {}


def write_stage(run_dir: Path, stage: str, facts: dict) -> None:
    """Record a finished stage in stages.json (rank 0's job)."""
    stages = finished_stages(run_dir)
    stages[stage] = facts
    write_json(run_dir / "stages.json", stages)


def mark_finished(run_dir: Path, stage: str, seconds: float, **facts) -> None:
    # MLX's peak since the last stage finished: this stage's model, caches and activations.
    peak = round(mx.get_peak_memory() / 1e6, 1)
    mx.reset_peak_memory()
    distributed.on_main(write_stage, run_dir, stage, {"seconds": round(seconds, 2), "peak_memory_mb": peak,
                                                      "ranks": distributed.size(), **facts})


def make_grader(config: RunConfig, loaded=None) -> Grader:
    """grade.auto_grade with the run's judge, which is loaded on first use only: data the rules
    grade never pays for it. `loaded` is a (model, tokenizer) already in memory to judge with."""
    if config.judge_backend.kind == "openai":
        server.check_server(config.judge_backend)

        def run_judge(items):
            return server.judge_openai(config.judge_backend, items, config.concurrency, config.judge_threshold)
    else:
        cache = {"model": loaded}

        def run_judge(items):
            if cache["model"] is None:
                cache["model"] = load_model(resolve_model(config.judge_model or config.model))
            model, tokenizer = cache["model"]
            return judge(model, tokenizer, items, config.judge_threshold)

    judged_kinds = frozenset(config.judge_kinds)
    return lambda records, responses: auto_grade(records, responses, run_judge, judged_kinds)


def base_answerer_and_grader(config: RunConfig):
    """The base model's answerer, on the chosen backend, and the grader."""
    if config.backend.kind == "openai":
        return server.answerer(config.backend, config.concurrency), make_grader(config)
    model, tokenizer = load_model(Path(config.model))
    same_judge = config.judge_model is None
    return in_process(model, tokenizer), make_grader(config, (model, tokenizer) if same_judge else None)


def diagnose(run_dir: Path) -> None:
    """Answer and grade every record with the base model.

    The training records first: the method needs their answers, while those of the validation and
    held-out records only measure the model before training. Both times are kept apart."""
    run = load_run(run_dir)
    start = time.perf_counter()
    if run.config.diagnosis == "probe":
        model, tokenizer = load_model(Path(run.config.model))
        forward = plan(model)

        def diagnose_part(records, desc):
            return rows_for(records, run_dir / "diagnosis.jsonl", run.config.answer_batch_size, desc,
                            lambda batch: probe_batch(model, tokenizer, batch, run.config.probe_threshold, forward))
    else:
        answer, grade = base_answerer_and_grader(run.config)

        def diagnose_part(records, desc):
            return answer_and_grade(answer, records, run_dir / "diagnosis.jsonl", grade,
                                    run.config.answer_batch_size, desc)
    diagnose_part(run.records_in("train"), "diagnose")
    method_seconds = time.perf_counter() - start
    rows = diagnose_part(run.records, "diagnose the rest")
    mark_finished(run_dir, "diagnose", time.perf_counter() - start, method_seconds=round(method_seconds, 2),
                  records=len(rows), correct=sum(r["correct"] for r in rows))


def sample(run_dir: Path) -> None:
    """SliCK only: grade k answers sampled at a temperature for every training record."""
    run = load_run(run_dir)
    start = time.perf_counter()
    select_config = run.config.select
    answer, grade = base_answerer_and_grader(run.config)
    sample_and_grade(answer, run.records_in("train"), run_dir / "samples.jsonl", grade,
                     run.config.answer_batch_size, select_config.slick_samples, select_config.slick_temperature)
    mark_finished(run_dir, "sample", time.perf_counter() - start, samples=select_config.slick_samples)


def restate(run_dir: Path) -> None:
    """The unknown training records answered again by the base model with their reference shown:
    the targets in the model's own words (targets.py)."""
    run = load_run(run_dir)
    start = time.perf_counter()
    correct = {row["id"]: row["correct"] for row in diagnosed(run)}
    unknown = [r for r in run.records_in("train") if not correct[r.id]]
    answer, grade = base_answerer_and_grader(run.config)
    rows = rows_for(unknown, run_dir / "restatements.jsonl", run.config.answer_batch_size, "restate",
                    lambda batch: restated(answer, grade, batch))
    mark_finished(run_dir, "restate", time.perf_counter() - start, records=len(rows),
                  credited=sum(r["correct"] for r in rows))


def diagnosed(run: "Run") -> list[dict]:
    """The diagnosis rows of a run, once the diagnosis is finished."""
    diagnosis = read_rows(run.dir / "diagnosis.jsonl")
    if len(diagnosis) != len(run.records):
        raise RunError(f"{run.dir}: the diagnosis is not finished; run `diagnose` first")
    return diagnosis


def export_unknown(run_dir: Path, path: Path) -> int:
    """Write the records the base model answered wrongly to `path` as JSONL, each object exactly
    as it was in the input file, so the user's own tools read it; returns how many."""
    run = load_run(run_dir)
    correct = {row["id"]: row["correct"] for row in diagnosed(run)}
    if not all(r.raw for r in run.records):
        raise RunError(f"{run_dir}: made by an older slearn-mlx that did not keep the input objects; diagnose again")
    unknown = [r.raw for r in run.records if not correct[r.id]]
    path.write_text("".join(json.dumps(raw, ensure_ascii=False) + "\n" for raw in unknown), encoding="utf-8")
    return len(unknown)


def select(run_dir: Path) -> None:
    run = load_run(run_dir)
    start = time.perf_counter()
    samples = {row["id"]: row for row in read_rows(run_dir / "samples.jsonl")}
    diagnosis = [{**row, **samples.get(row["id"], {})} for row in diagnosed(run)]
    restatements = {row["id"]: row for row in read_rows(run_dir / "restatements.jsonl")}
    rows = select_records(run.records, diagnosis, run.ids("train"), run.config.select, run.config.seed, restatements)
    distributed.on_main(write_atomic, run_dir / "selection.jsonl",
                        "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in rows))
    mark_finished(run_dir, "select", time.perf_counter() - start, selected=sum(r["selected"] for r in rows))


def answer_check(run: Run, model, tokenizer, grade: Grader):
    """What the check after each epoch answers with the model in training: the training records the
    probe cannot vouch for, and the validation records, never trained on, as a guard for the report.
    The ranks share the answering like the diagnosis's, through a file per epoch, which also lets a
    check cut short by a kill resume: the epoch is trained again to the same weights from its start."""
    validation = run.records_in("validation")

    def scorer(batch: list[Record]) -> list[dict]:
        texts, tokens = zip(*generate(model, tokenizer, batch))
        return [{**row, "tokens": said} for row, said in zip(graded(batch, list(texts), grade), tokens)]

    def answer(records: list[Record], epoch: int) -> tuple[list[dict], dict]:
        rows = rows_for(records + validation, run.dir / "adapter" / f"check-epoch{epoch}.jsonl",
                        run.config.answer_batch_size, f"check epoch {epoch}", scorer)
        guarded = rows[len(records):]
        return rows[:len(records)], {"validation_accuracy": sum(r["correct"] for r in guarded) / len(guarded)
                                     if guarded else None}
    return answer


def train(run_dir: Path) -> None:
    run = load_run(run_dir)
    start = time.perf_counter()
    selection = read_rows(run_dir / "selection.jsonl")
    if not any(s["selected"] for s in selection):
        # Nothing unknown: the model already answers everything; there is nothing to teach.
        mark_finished(run_dir, "train", time.perf_counter() - start, examples=0)
        return
    by_id = {r.id: r for r in run.records}
    model, tokenizer = load_model(Path(run.config.model))
    grade = make_grader(run.config)  # not the model in training: it must judge as the base model
    examples = [Example(by_id[s["id"]], s["target"], s["expected"], s["known"], s["selected"]) for s in selection]
    answer = answer_check(run, model, tokenizer, grade) if run.config.train.check else None
    facts = train_lora(model, tokenizer, examples, run.config.train, run_dir / "adapter", answer)
    mark_finished(run_dir, "train", time.perf_counter() - start, **facts)


def evaluate(run_dir: Path) -> dict:
    """Answer and grade every record again with the adapter; write metrics.json and report.md."""
    run = load_run(run_dir)
    start = time.perf_counter()
    adapter = run_dir / "adapter"
    model, tokenizer = load_model(Path(run.config.model), adapter if (adapter / "adapters.safetensors").exists() else None)
    answer_and_grade(in_process(model, tokenizer), run.records, run_dir / "evaluation.jsonl", make_grader(run.config),
                     run.config.answer_batch_size, "evaluate")
    mark_finished(run_dir, "evaluate", time.perf_counter() - start, records=len(run.records))
    return finish_metrics(run_dir)


def write_metrics(run_dir: Path) -> dict:
    """metrics.json, report.md and report.html of a finished run (`slearn_mlx report RUN` redoes them)."""
    run = load_run(run_dir)
    if "evaluate" not in finished_stages(run_dir):
        raise RunError(f"{run_dir}: the run is not evaluated yet; finish it with `adapt` or `evaluate`")
    before = read_rows(run_dir / "diagnosis.jsonl")
    after = read_rows(run_dir / "evaluation.jsonl")
    trained = trained_ids(run_dir)
    stages = finished_stages(run_dir)
    metrics = {
        "run": str(run_dir),
        "policy": run.config.select.policy,
        "records": len(run.records),
        "accuracy": accuracy_table(before, after, trained, run.splits),
        "epochs": epoch_summary(run_dir),
        "stage_seconds": {s: stages[s]["seconds"] for s in STAGES if s in stages},
        "stages": stages,
    }
    metrics["total_seconds"] = round(sum(metrics["stage_seconds"].values()), 2)
    write_json(run_dir / "metrics.json", metrics)
    write_atomic(run_dir / "report.md", render_report(metrics, run.config, run.records, before, after))
    write_atomic(run_dir / "report.html", render_html(metrics, run.config, run.records, before, after))
    return metrics


def finish_metrics(run_dir: Path) -> dict:
    """write_metrics on rank 0; every rank returns what it wrote."""
    distributed.on_main(write_metrics, run_dir)
    return read_json(run_dir / "metrics.json")


STAGE_FUNCTIONS = {"diagnose": diagnose, "sample": sample, "restate": restate, "select": select, "train": train,
                   "evaluate": evaluate}


def stages_for(config: RunConfig) -> list[str]:
    skipped = {"sample": config.select.policy != "slick", "restate": config.select.targets != "own"}
    return [s for s in STAGES if not skipped.get(s)]


def adapt(config: RunConfig, run_dir: Path) -> dict:
    """The whole loop; stages already finished in run_dir are not redone."""
    distributed.on_main(create_run, config, run_dir)
    for stage in stages_for(config):
        if stage not in finished_stages(run_dir):
            STAGE_FUNCTIONS[stage](run_dir)
    return finish_metrics(run_dir)
