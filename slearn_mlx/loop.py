"""The self-learning loop over a run folder: diagnose -> (sample) -> (restate) -> select -> train -> evaluate.

Each stage reads what the previous one wrote in the run folder and writes its own files,
so a stage can run alone (`slearn_mlx train RUN`) and a rerun skips finished stages.
Under mlx.launch every rank runs the stages that answer (sharded) and train (data-parallel);
only rank 0 writes the shared files (distributed.py). run.py lists the files.
"""

import time
from pathlib import Path

from . import distributed
from .answer import generate, in_process
from .artifacts import read_rows, write_rows
from .backends import base_answerer_and_grader, grader
from .config import RunConfig
from .data import Record
from .forward import plan
from .grade import Grader
from .metrics import finish_metrics
from .models import load_model
from .probe import probe_batch
from .progress import stage_started
from .resumable_rows import answer_and_grade, graded, rows_for, sample_and_grade
from .run import STAGES, Run, RunError, create_run, finished_stages, load_run, mark_finished
from .selection import select_records
from .targets import restate as restated
from .train import Check, Example, train_lora, word_for_word


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


def epoch_check(run: Run, model, tokenizer, grade: Grader) -> Check:
    """The check after each epoch, with the model in training: the training records answered, an answer
    that is not the one expected word for word graded; and for the epochs that are kept, the validation
    records, never trained on, answered and graded as a guard for the report (drafted by the base
    model's answers). The ranks share the answering like the diagnosis's, through a file per epoch,
    which also lets a check cut short by a kill resume: the epoch is trained again to the same weights
    from its start."""
    said = word_for_word(model, tokenizer)
    validation = run.records_in("validation")
    base_answers = {row["id"]: row.get("response") for row in read_rows(run.dir / "diagnosis.jsonl")}

    def rows(records: list[Record], epoch: int, scorer) -> list[dict]:
        return rows_for(records, run.dir / "adapter" / f"check-epoch{epoch}.jsonl", run.config.answer_batch_size,
                        f"check epoch {epoch}", scorer)

    def answer(records: list[Record], expected: list[tuple[str, list[int] | None]], epoch: int) -> list[dict]:
        expected_of = {r.id: e for r, e in zip(records, expected)}

        def scorer(batch: list[Record]) -> list[dict]:
            heard = said(batch, [expected_of[r.id] for r in batch], epoch)
            departed = [i for i, row in enumerate(heard) if not row["correct"]]
            grades = graded([batch[i] for i in departed], [heard[i]["response"] for i in departed], grade)
            for i, row in zip(departed, grades):
                heard[i].update(row)
            return heard
        return rows(records, epoch, scorer)

    def guard(epoch: int) -> dict:
        def scorer(batch: list[Record]) -> list[dict]:
            answers = generate(model, tokenizer, batch, drafts=[base_answers.get(r.id) for r in batch])
            return graded(batch, [text for text, _ in answers], grade)
        guarded = rows(validation, epoch, scorer)
        return {"validation_accuracy": sum(r["correct"] for r in guarded) / len(guarded)} if guarded else {}

    return Check(answer, guard)


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
    grade = grader(run.config)  # not the model in training: it must judge as the base model
    examples = [Example(by_id[s["id"]], s["target"], s["expected"], s["known"], s["selected"]) for s in selection]
    check = epoch_check(run, model, tokenizer, grade) if run.config.train.check else None
    facts = train_lora(model, tokenizer, examples, run.config.train, run_dir / "adapter", check)
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
    skipped = {"sample": config.select.policy != "slick", "restate": config.select.targets != "own"}
    return [s for s in STAGES if not skipped.get(s)]


def adapt(config: RunConfig, run_dir: Path) -> dict:
    """The whole loop; stages already finished in run_dir are not redone."""
    distributed.on_main(create_run, config, run_dir)
    for stage in stages_for(config):
        if stage not in finished_stages(run_dir):
            stage_started(stage)
            STAGE_FUNCTIONS[stage](run_dir)
    return finish_metrics(run_dir)
