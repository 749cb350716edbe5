"""The self-learning loop over a run folder: diagnose -> (sample) -> (restate) -> select -> train -> evaluate.

Each stage reads what the previous one wrote in the run folder and writes its own files,
so a stage can run alone (`slearn_mlx train RUN`) and a rerun skips finished stages.
Under mlx.launch every rank runs the stages that answer (sharded) and train (data-parallel);
only rank 0 writes the shared files (distributed.py). run.py lists the files.
"""

import time
from pathlib import Path

from . import distributed
from .answer import in_process
from .artifacts import read_rows, write_rows
from .backends import base_answerer_and_grader, grader
from .config import RunConfig
from .forward import plan
from .metrics import finish_metrics
from .models import load_model
from .probe import probe_batch
from .progress import stage_started
from .resumable_rows import answer_and_grade, rows_for, sample_and_grade
from .run import STAGES, Run, RunError, create_run, finished_stages, load_config, load_run, mark_finished
from .selection import POLICIES, select_records
from .targets import restate as restated
from .train import Example, graded_check, train_lora


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
    write_rows(path, unknown)
    return len(unknown)


def select(run_dir: Path) -> None:
    run = load_run(run_dir)
    start = time.perf_counter()
    samples = {row["id"]: row for row in read_rows(run_dir / "samples.jsonl")}
    diagnosis = [{**row, **samples.get(row["id"], {})} for row in diagnosed(run)]
    restatements = {row["id"]: row for row in read_rows(run_dir / "restatements.jsonl")}
    rows = select_records(run.records, diagnosis, run.ids("train"), run.config.select, run.config.seed, restatements)
    distributed.on_main(write_rows, run_dir / "selection.jsonl", rows)
    mark_finished(run_dir, "select", time.perf_counter() - start, selected=sum(r["selected"] for r in rows))


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
    examples = [Example(by_id[s["id"]], s["target"], s["expected"], s["known"], s["selected"]) for s in selection]
    adapter_dir = run_dir / "adapter"
    check = None
    if run.config.train.check:
        base_answers = {row["id"]: row.get("response") for row in read_rows(run_dir / "diagnosis.jsonl")}
        # The run's grader, not the model in training: it must judge as the base model.
        check = graded_check(model, tokenizer, grader(run.config), run.records_in("validation"), base_answers,
                             run.config.answer_batch_size, adapter_dir)
    facts = train_lora(model, tokenizer, examples, run.config.train, adapter_dir, check)
    mark_finished(run_dir, "train", time.perf_counter() - start, **facts)


def evaluate(run_dir: Path) -> dict:
    """Answer and grade every record again with the adapter; write metrics.json and report.md."""
    run = load_run(run_dir)
    start = time.perf_counter()
    adapter = run_dir / "adapter"
    model, tokenizer = load_model(Path(run.config.model), adapter if (adapter / "adapters.safetensors").exists() else None)
    answer_and_grade(in_process(model, tokenizer), run.records, run_dir / "evaluation.jsonl", grader(run.config),
                     run.config.answer_batch_size, "evaluate")
    mark_finished(run_dir, "evaluate", time.perf_counter() - start, records=len(run.records))
    return finish_metrics(run_dir)


STAGE_FUNCTIONS = {"diagnose": diagnose, "sample": sample, "restate": restate, "select": select, "train": train,
                   "evaluate": evaluate}


def stages_for(config: RunConfig) -> list[str]:
    skipped = {"sample": not POLICIES[config.select.policy].samples, "restate": config.select.targets != "own"}
    return [s for s in STAGES if not skipped.get(s)]


def run_stages(run_dir: Path) -> dict:
    """Every stage of the run folder that is not finished yet, in order; the run's metrics."""
    for stage in stages_for(load_config(run_dir)):
        if stage not in finished_stages(run_dir):
            stage_started(stage)
            STAGE_FUNCTIONS[stage](run_dir)
    return finish_metrics(run_dir)


def adapt(config: RunConfig, run_dir: Path) -> dict:
    """The whole loop: the run folder made (or reopened, when it holds this configuration), then its
    stages; those already finished are not redone."""
    distributed.on_main(create_run, config, run_dir)
    return run_stages(run_dir)
