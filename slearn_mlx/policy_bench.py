"""The paper's experiment as a command: selection policies side by side.

Every policy runs on the same data, model, seed and splits, one after the other in one
process, each in its own run folder under the bench folder. The greedy diagnosis and the
restatements are made once and copied to the other runs: every policy's selection then starts
from the same answers and targets. What each policy costs is what the method needs before and
during training: the diagnosis of the training records (none for `all` trained on bare references,
which needs no answers), SliCK's sampling, the restatements, the training and its checks. The
diagnosis of the validation and held-out records, and the evaluation after training, are
measurement, not method, and are not counted.
"""

import shutil
from dataclasses import replace
from pathlib import Path

from . import distributed
from .artifacts import write_atomic, write_json
from .config import RunConfig
from .loop import run_stages
from .report import percent
from .run import create_run, finished_stages, write_stage
from .selection import POLICIES

ACCURACY_COLUMNS = ("whole_set", "known", "unknown", "held_out")


# The stages whose work is the same for every policy, and the file each writes.
SHARED_STAGES = {"diagnose": "diagnosis.jsonl", "restate": "restatements.jsonl"}


def share_stages(source: Path, run_dir: Path) -> None:
    """Give run_dir the diagnosis and restatements already made in source, with their cost."""
    done = finished_stages(source)
    for stage, file in SHARED_STAGES.items():
        if stage in finished_stages(run_dir) or stage not in done or source == run_dir:
            continue
        shutil.copy(source / file, run_dir / file)
        write_stage(run_dir, stage, {**done[stage], "shared_from": str(source)})


def adapt_sharing_diagnosis(config: RunConfig, run_dir: Path, source: Path, force: bool = False,
                            skip_invalid: bool = False) -> dict:
    """The whole loop in run_dir, starting from the diagnosis and restatements made in source (or made
    here if source is run_dir)."""
    distributed.on_main(create_run, config, run_dir, force, skip_invalid)
    distributed.on_main(share_stages, source, run_dir)
    return run_stages(run_dir)


def accuracies(metrics: dict, when: str) -> dict:
    """The table's accuracy columns of a run, "before" or "after" training."""
    return {c: metrics["accuracy"][c][when] for c in ACCURACY_COLUMNS}


def method_seconds(config: RunConfig, stages: dict) -> dict:
    """What the method spent: answering before training, and training with its checks."""
    diagnose = stages["diagnose"]
    needs_answers = POLICIES[config.select.policy].by_diagnosis or config.select.targets == "own"
    diagnosis = diagnose.get("method_seconds", diagnose["seconds"]) if needs_answers else 0.0
    diagnosis += stages.get("sample", {}).get("seconds", 0.0)
    restate = stages.get("restate", {}).get("seconds", 0.0) if config.select.targets == "own" else 0.0
    training = stages["train"]["seconds"]
    return {"diagnosis": diagnosis, "restate": restate, "checks": stages["train"].get("check_seconds", 0.0),
            "training": training, "total": diagnosis + restate + training}


# The usual way the method must beat on time: every training record on its bare reference for three epochs,
# without checks, the last kept (`adapt --policy all --targets reference --no-check --epochs 3`).
FULL_DATA = "full-data fine-tuning"


def full_data_fine_tuning(config: RunConfig) -> RunConfig:
    return replace(config, select=replace(config.select, policy="all", targets="reference"),
                   train=replace(config.train, check=False, epochs=3))


def bench(config: RunConfig, policies: list[str], bench_dir: Path, force: bool = False,
          skip_invalid: bool = False) -> list[dict]:
    """Run each policy, then full-data fine-tuning; write bench.json, bench.md and bench.png in bench_dir;
    return the table rows."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(policy, replace(config, select=replace(config.select, policy=policy))) for policy in policies]
    for name, run_config in runs + [(FULL_DATA, full_data_fine_tuning(config))]:
        folder = bench_dir / name.replace(" ", "-")
        metrics = adapt_sharing_diagnosis(run_config, folder, bench_dir / policies[0], force, skip_invalid)
        if not rows:
            rows.append({"policy": "base model", "trained": 0, "record_epochs": 0, "seconds": None,
                         "accuracy": accuracies(metrics, "before")})
        rows.append({
            "policy": name,
            "trained": metrics["accuracy"]["trained"]["records"],
            "record_epochs": metrics["stages"]["train"].get("record_epochs", 0),
            "seconds": method_seconds(run_config, metrics["stages"]),
            "accuracy": accuracies(metrics, "after"),
        })
    distributed.on_main(write_results, rows, bench_dir)
    return rows


def write_results(rows: list[dict], bench_dir: Path) -> None:
    write_json(bench_dir / "bench.json", rows)
    write_atomic(bench_dir / "bench.md", render_table(rows))
    plot(rows, bench_dir / "bench.png")


def render_table(rows: list[dict]) -> str:
    lines = [
        "| policy | records trained | record-epochs | diagnosis s | restate s | training s (checks) | total s "
        "| / full-data | whole set | known | unknown | held out |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = next((r["seconds"]["total"] for r in rows if r["policy"] == FULL_DATA), None)
    for row in rows:
        s = row["seconds"]
        times = [f"{s['diagnosis']:.0f}", f"{s['restate']:.0f}", f"{s['training']:.0f} ({s['checks']:.0f})",
                 f"{s['total']:.0f}", f"{s['total'] / baseline:.2f}" if baseline else "-"] if s else ["-"] * 5
        accuracy = [percent(row["accuracy"][c]) for c in ACCURACY_COLUMNS]
        lines.append(f"| {row['policy']} | {row['trained']} | {row['record_epochs']} | "
                     + " | ".join(times + accuracy) + " |")
    lines += ["", "Time is what the method costs: the diagnosis of the training records (none for `all` on bare "
              "references), SliCK's sampling, the restatements, and the training with its checks; the rest of the "
              "diagnosis and the evaluation after training are measurement and not counted. / full-data: the total "
              "against full-data fine-tuning, every training record on its bare reference for 3 epochs without "
              "checks (`adapt --policy all --targets reference --no-check --epochs 3`), the usual way the method "
              "must beat. Record-epochs: records trained on, summed over the epochs. Known and unknown are the "
              "training split's records the base model answered right and wrong."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [100 * (row["accuracy"][c] or 0) for c in ACCURACY_COLUMNS]
        acc_ax.bar([x + i * width for x in range(len(ACCURACY_COLUMNS))], values, width, label=row["policy"])
    acc_ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(ACCURACY_COLUMNS))],
                      [c.replace("_", " ") for c in ACCURACY_COLUMNS])
    acc_ax.set_ylabel("accuracy (%): after training; base model: before")
    acc_ax.set_ylim(0, 105)
    acc_ax.legend(fontsize=8)
    timed = [r for r in rows if r["seconds"]]
    names = [r["policy"] for r in timed]
    bottom = [0.0] * len(timed)
    for part in ("diagnosis", "restate", "checks", "training"):
        # training's seconds include its checks: the bar shows the checks apart
        heights = [r["seconds"][part] - (r["seconds"]["checks"] if part == "training" else 0) for r in timed]
        time_ax.bar(names, heights, bottom=bottom, label="training steps" if part == "training" else part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    time_ax.set_ylabel("seconds")
    time_ax.legend(fontsize=8)
    fig.suptitle("slearn-mlx bench: selection policies on the same data, model and splits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
