"""The run folder: made once per configuration and data, reopened by every stage, and what it records.

    RUN/config.json        the resolved configuration (a different one is refused)
    RUN/config.yaml        the same as options, in the form `--config` reads: `adapt --config` repeats the run
    RUN/versions.json      software and device
    RUN/records.jsonl      the dataset as loaded, with ids and split (train/validation/held_out)
    RUN/refused.json       with --skip-invalid, the records left out, each as FILE:LINE: problem
    RUN/diagnosis.jsonl    the base model's greedy answers and grades
    RUN/samples.jsonl      SliCK only: grades of answers sampled at a temperature
    RUN/restatements.jsonl the unknown training records answered again with the reference shown (targets.py)
    RUN/selection.jsonl    every training record: its target, whether the first epoch trains it, and why
    RUN/adapter/           LoRA adapter (mlx_lm --adapter-path), train_log.jsonl (epochs, checks, who left and returned)
    RUN/evaluation.jsonl   the adapted model's answers and grades
    RUN/stages.json        wall time of each finished stage
    RUN/metrics.json, RUN/report.md, RUN/report.html
"""

import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from . import __version__, blas, distributed
from .activations import replaces_swiglu
from .artifacts import read_json, read_rows, write_json, write_rows
from .config import RunConfig, config_fingerprint, options_of
from .config_file import SAVED_NAME, write_config_file
from .data import Record, assign_splits, read_records, usable_records
from .models import dequantizes
from .progress import duration
from .train import adapter_disk_bytes

log = logging.getLogger("slearn_mlx")

STAGES = ("diagnose", "sample", "restate", "select", "train", "evaluate")
REFUSED = "refused.json"  # the records --skip-invalid left out, each as FILE:LINE: problem


class RunError(ValueError):
    """A run folder that cannot be used as asked."""


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
        "swiglu_through_rational_tanh": replaces_swiglu(),
        "blas": blas.loaded,
    }


def create_run(config: RunConfig, run_dir: Path, force: bool = False, skip_invalid: bool = False) -> Path:
    """Create the run folder, or reopen it when it was made with the same configuration and data.

    A run folder of another configuration is never reused; with `force` it is replaced. A record the
    data has a problem with stops the run, or with `skip_invalid` is left out, named in the log and
    in refused.json, and counted in the report.
    """
    config_path = run_dir / "config.json"
    config_json = config.to_json()  # with the data file's digest, read once
    if config_path.exists() and read_json(config_path) == config_json:
        return run_dir  # its records were read when it was made; the data file is the same
    records, refused = read_records(Path(config.data))
    records = usable_records(Path(config.data), records, refused, skip_invalid)  # before any model work
    if config_path.exists():
        if not force:
            raise RunError(f"{run_dir} holds a run with a different configuration or data; "
                           "choose another --out, or replace it with --force")
        shutil.rmtree(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a run folder; choose another --out")
    check_disk(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if refused:
        write_json(run_dir / REFUSED, [str(problem) for problem in refused])
    splits = assign_splits(records, config.held_out_fraction, config.validation_fraction, config.seed)
    write_rows(run_dir / "records.jsonl", [{**r.to_json(), "split": splits[r.id]} for r in records])
    write_json(run_dir / "versions.json", versions())
    write_config_file(run_dir / SAVED_NAME, options_of(config))
    write_json(config_path, config_json)  # last: a folder with it is a complete one
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


def load_config(run_dir: Path) -> RunConfig:
    """The configuration a run folder was made with, without reading its records."""
    if not (run_dir / "config.json").exists():
        raise RunError(f"{run_dir}: not a run folder (no config.json); start one with `adapt` or `diagnose`")
    obj = read_json(run_dir / "config.json")
    obj.pop("data_sha256")
    return RunConfig.from_json(obj)


def load_run(run_dir: Path) -> Run:
    config = load_config(run_dir)
    rows = read_rows(run_dir / "records.jsonl")
    splits = {row["id"]: row.pop("split") for row in rows}
    return Run(run_dir, config, [Record(**row) for row in rows], splits)


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
    log.info(f"{stage}: finished in {duration(seconds)}, peak memory {peak:,.0f} MB")
    distributed.on_main(write_stage, run_dir, stage, {"seconds": round(seconds, 2), "peak_memory_mb": peak,
                                                      "ranks": distributed.size(), **facts})
