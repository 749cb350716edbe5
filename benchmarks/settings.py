"""Which settings keep what the model knew and teach it what it did not: the default loop against
one change at a time, on the same data, model, seed, splits and diagnosis.

    python -m benchmarks.settings [DATA] [--out DIR] [--model M] [--change NAME=VALUE[,NAME=VALUE] ...]

NAME is a field of TrainConfig or SelectConfig (learning_rate, lora_rank, replay_fraction, ...); a
change may set several at once.
Each setting runs in its own run folder under DIR, so an interrupted sweep resumes where it
stopped. The diagnosis is made once and shared, as in `bench`. The table goes to stdout and to
DIR/settings.md; time is the method's (diagnosis and training), as in `bench`.
"""

import argparse
from dataclasses import replace
from pathlib import Path

from benchmarks import print_provenance
from slearn_mlx.blas import setup

setup()  # OpenBLAS before mlx, as the command does

from slearn_mlx.artifacts import write_atomic, write_json
from slearn_mlx.policy_bench import ACCURACY_COLUMNS, accuracies, adapt_sharing_diagnosis, method_seconds
from slearn_mlx.config import RunConfig, resolve_config
from slearn_mlx.report import percent

# One change at a time from the defaults: the replay share, the learning rate, the adapter's size
# and reach, and how long training may go on before the validation split stops it. The last,
# another training seed (adapter initialisation and batch order; the splits stay), shows how far
# two runs of the same settings differ, which is the yardstick for every other row.
CHANGES = ["policy=unknown", "replay_fraction=0.25", "learning_rate=2e-4", "epochs=5", "patience=2", "check=false",
           "targets=reference", "seed=1"]


def changed(config: RunConfig, change: str) -> RunConfig:
    """config with the settings of a change "NAME=VALUE[,NAME=VALUE...]"."""
    for assignment in change.split(","):
        name, _, value = assignment.partition("=")
        part = next((p for p in ("train", "select") if hasattr(getattr(config, p), name)), None)
        if part is None:
            raise SystemExit(f"--change {change}: TrainConfig and SelectConfig have no setting {name!r}")
        settings = getattr(config, part)
        current = getattr(settings, name)
        kind = float if current is None else type(current)  # None: an unset limit such as max_seconds
        try:
            if kind not in (int, float, str, bool):
                raise ValueError(f"only numbers, words and true/false can be set here, and {name} is a {kind.__name__}")
            config = replace(config, **{part: replace(settings, **{name: parsed(kind, value)})})
        except ValueError as error:
            raise SystemExit(f"--change {change}: {name}={value!r}: {error}") from None
    return config


def parsed(kind: type, value: str):
    if kind is not bool:
        return kind(value)
    if value.lower() not in ("true", "false"):
        raise ValueError("give true or false")
    return value.lower() == "true"


def run_setting(name: str, config: RunConfig, run_dir: Path, shared_from: Path) -> dict:
    metrics = adapt_sharing_diagnosis(config, run_dir, shared_from)
    training = metrics["stages"]["train"]
    return {
        "setting": name,
        "trained": metrics["accuracy"]["trained"]["records"],
        "record_epochs": training.get("record_epochs", 0),
        "check_answers": training.get("check_answers", 0),
        "seconds": method_seconds(config, metrics["stages"]),
        "epochs_run": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "accuracy": accuracies(metrics, "after"),
        "before": accuracies(metrics, "before"),
    }


def render(rows: list[dict]) -> str:
    lines = ["| setting | records trained | record-epochs | check answers | total s | / default | epochs run (kept) | "
             + " | ".join(c.replace("_", " ") for c in ACCURACY_COLUMNS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(ACCURACY_COLUMNS),
             "| base model | 0 | 0 | - | - | - | - | " + " | ".join(percent(rows[0]["before"][c]) for c in ACCURACY_COLUMNS) + " |"]
    default_seconds = rows[0]["seconds"]["total"]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['trained']} | {row['record_epochs']} | {row['check_answers']} | "
                     f"{row['seconds']['total']:.0f} | "
                     f"{row['seconds']['total'] / default_seconds:.2f} | {row['epochs_run']} ({row['best_epoch']}) | "
                     + " | ".join(percent(row["accuracy"][c]) for c in ACCURACY_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?")
    parser.add_argument("--model")
    parser.add_argument("--out", default="runs/settings")
    parser.add_argument("--change", action="append", help=f"NAME=VALUE[,NAME=VALUE], repeatable (default: {' '.join(CHANGES)})")
    args = parser.parse_args()
    print_provenance("benchmarks.settings")

    config = resolve_config(args.data, args.model)
    out = Path(args.out)
    settings = [("default", config)] + [(c, changed(config, c)) for c in args.change or CHANGES]
    rows = []
    for name, setting_config in settings:
        folder = out / name.replace("=", "-").replace(",", "+")
        rows.append(run_setting(name, setting_config, folder, out / "default"))
        write_json(out / "settings.json", rows)
        write_atomic(out / "settings.md", render(rows))
    print(f"\n{config.data}, model {Path(config.model).name}; each change against the defaults\n")
    print(render(rows))


if __name__ == "__main__":
    main()
