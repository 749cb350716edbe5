"""The run configuration: what a run does, each setting's default, and how the commands take it.

Every setting the commands take is a field here whose metadata holds its flags, type and help: cli.py
makes the options from these fields, in their order, so a default or a help text is written once.
A run's config.json is RunConfig as JSON, with the data file's sha256: a run folder made with another
configuration or other data is refused (run.py). Its config.yaml holds the same settings by their
option names (`options_of`), the form `--config` reads.
"""

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import click

from .backends import BACKENDS
from .data import KINDS, DataError, default_dataset
from .grade import GRADERS, JUDGED_KINDS, graders_by_kind
from .judge import JUDGE_THRESHOLD
from .models import resolve_model
from .openai_api import Backend
from .selection import POLICIES
from .targets import TARGETS


class ConfigError(ValueError):
    """A configuration that cannot run."""


@dataclass(frozen=True)
class Option:
    """How the commands take a setting: its flags, click type and help, and its name in a --config
    file and config.yaml (the field's own name unless given)."""
    flags: tuple[str, ...]
    help: str | None = None
    type: click.ParamType | type | None = None
    name: str | None = None
    multiple: bool = False


def option(default, *flags: str, **attributes):
    """A field with this default that the commands take as `flags`."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"option": Option(flags, **attributes)})
    return field(default=default, metadata={"option": Option(flags, **attributes)})


@dataclass
class SelectConfig:
    # all by default: under the per-epoch check a known record still right after the first epoch leaves
    # training, and training all of them once kept more of what the model knew and learned more than
    # replay on the default data, the continents and english_forms, in the same time (README "Measured
    # on the default data"); `unknown` is the paper's rule, for comparison.
    policy: str = option(
        "all", "--policy", type=click.Choice(POLICIES.names()),
        help="unknown: what the model got wrong (SLearnLLM); all: everything; replay: unknown plus a share of "
             "the known; slick: by SliCK category from sampled answers; or one a package declares under the entry "
             "points slearn_mlx.policies.")
    # Share of the known training records replayed: with a learning rate of 1e-4, 0.75 kept the most of
    # the known on the default data and two shared sets under the previous loop (bare references);
    # not measured again since (README "Choosing the defaults").
    replay_fraction: float = option(0.75, "--replay-fraction", type=click.FloatRange(0, 1),
                                    help="replay: share of the known training records trained on again.")
    targets: str = option(
        "own", "--targets", type=click.Choice(TARGETS),
        help="own: train each record on an answer in the model's own words (its right answer, or its restatement "
             "of the reference); reference: on the bare reference, as the paper does.")
    slick_samples: int = option(4, "--slick-samples", type=click.IntRange(1))
    slick_temperature: float = option(0.7, "--slick-temperature", type=click.FloatRange(0, min_open=True))
    slick_keep: tuple[str, ...] = ("MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass
class TrainConfig:
    epochs: int = option(6, "--epochs", type=click.IntRange(1))
    patience: int = option(2, "--patience", type=click.IntRange(1),
                           help="Epochs without more training records answered right before training stops.")
    check: bool = option(True, "--check/--no-check",
                         help="After each epoch, learned records leave training, forgotten ones return, and the best "
                              "epoch is kept; --no-check trains every epoch on the first selection and keeps the last.")
    recheck: float = option(1.0, "--recheck", type=click.FloatRange(0, 1),
                            help="Share of the right records an epoch did not train that its check asks again, "
                                 "those asked longest ago first (the records it trained are always asked).")
    rehearsal: float = option(1.0, "--rehearsal", type=click.FloatRange(0),
                              help="Right records trained again in each epoch after the first, per record still wrong.")
    max_seconds: float | None = option(None, "--max-train-seconds", name="max_train_seconds",
                                       type=click.FloatRange(0, min_open=True),
                                       help="Stop training after this wall time (equal-budget comparisons).")
    batch_size: int = option(8, "--batch-size", type=click.IntRange(1))
    # 1e-4 with a replay share of 0.75 kept the most of the known and scored best on the whole set of
    # the settings measured on the default data and two shared sets (README "Choosing the defaults").
    learning_rate: float = option(1e-4, "--learning-rate", type=float)
    lora_rank: int = option(8, "--lora-rank", type=click.IntRange(1))
    # The last N transformer blocks get adapters, on every linear layer.
    lora_layers: int = option(16, "--lora-layers", type=click.IntRange(1))
    max_seq_length: int = option(1024, "--max-seq-length", type=click.IntRange(8),
                                 help="Training examples longer than this many tokens are reported and left out, "
                                      "not cut.")
    # Weight of KL(base || adapted) over the answer tokens of the records the model already knew: a pull
    # back toward what it said before training, on the records where that was right. 0: off.
    kl_weight: float = option(0.0, "--kl-weight", type=click.FloatRange(0),
                              help="Pull the adapted model toward the base model's next-token distribution on the "
                                   "answers of the records it knew (KL divergence, this weight); 0: off.")
    lora_scale: float = 20.0
    seed: int = 0  # the run's --seed (config_from_options); a setting of its own for benchmarks/settings.py


def backend_options(prefix: str, kind: str, base_url: str, api_key_env: str, served_model: str) -> dict[str, Option]:
    """The options of a Backend field (`--backend`, or `--judge-backend` with prefix "judge_"), with these helps."""
    def flag(name: str) -> tuple[str, ...]:
        return ("--" + (prefix + name).replace("_", "-"),)

    return {"kind": Option(flag("backend"), kind, click.Choice(BACKENDS.names()), name=f"{prefix}backend"),
            "base_url": Option(flag("base_url"), base_url, name=f"{prefix}base_url"),
            "api_key_env": Option(flag("api_key_env"), api_key_env, name=f"{prefix}api_key_env"),
            "model": Option(flag("served_model"), served_model, name=f"{prefix}served_model")}


@dataclass
class RunConfig:
    data: str
    model: str
    select: SelectConfig = field(default_factory=SelectConfig)
    held_out_fraction: float = option(0.2, "--held-out", type=click.FloatRange(0, 0.9),
                                      help="Fraction of records never trained on, to measure generalisation.")
    validation_fraction: float = option(
        0.1, "--validation", type=click.FloatRange(0, 0.5),
        help="Fraction never trained on, answered after each epoch as a guard of generalisation (reported, not "
             "the objective).")
    seed: int = option(0, "--seed", type=int)
    diagnosis: str = option("generate", "--diagnosis", type=click.Choice(["generate", "probe"]),
                            help="generate: answer and grade; probe: score the reference answer without generating.")
    probe_threshold: float = option(-1.0, "--probe-threshold", type=float,
                                    help="probe: mean log-probability of the reference at which a record counts as "
                                         "known.")
    answer_batch_size: int = option(64, "--answer-batch-size", type=click.IntRange(1))
    graders: list[str] = option([], "--grader", multiple=True,
                                help="KIND=NAME: grade the records of this kind with this grader instead of the rule "
                                     f"picked for each (repeatable): {', '.join(GRADERS.names())}, or one a package "
                                     "declares under the entry points slearn_mlx.graders.")
    # None: the model being adapted, without its adapter.
    judge_model: str | None = option(None, "--judge-model", help="Model that grades the --judge-kind records "
                                                                 "[default: --model].")
    judge_kinds: list[str] = option(sorted(JUDGED_KINDS), "--judge-kind", type=click.Choice(KINDS),
                                    multiple=True, help="Grade records of this kind with the judge instead of the "
                                                        "rules (repeatable).")
    judge_threshold: float = option(JUDGE_THRESHOLD, "--judge-threshold", type=click.FloatRange(0, 1),
                                    help="The judge's probability of 'correct' from which an answer counts as right.")
    # Who answers in the diagnosis (and SliCK's sampling), and who judges free-form answers.
    # The evaluation and validation answer in-process: the adapter in training is on no server.
    backend: Backend = field(default_factory=Backend, metadata={"options": backend_options(
        "",
        kind="Who answers in the diagnosis: mlx, the model in this process; openai, a server at --base-url serving "
             "the same model; or one a package declares under the entry points slearn_mlx.backends (evaluation "
             "always answers in-process, with the adapter).",
        base_url="openai backend: the API's URL, e.g. http://127.0.0.1:8080/v1.",
        api_key_env="openai backend: environment variable holding the API key.",
        served_model="openai backend: the name the server knows the model by [default: the server's own model].")})
    judge_backend: Backend = field(default_factory=Backend, metadata={"options": backend_options(
        "judge_",
        kind="Who judges free-form answers: mlx (--judge-model in this process), openai, or a package's.",
        base_url="openai judge backend: the API's URL.",
        api_key_env="openai judge backend: environment variable holding the API key.",
        served_model="openai judge backend: the name the server knows the judge by.")})
    concurrency: int = option(4, "--concurrency", type=click.IntRange(1), help="Requests in flight at once to a server.")
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_json(cls, obj: dict) -> "RunConfig":
        select = SelectConfig(**{**obj["select"], "slick_keep": tuple(obj["select"]["slick_keep"])})
        backends = {name: Backend(**obj[name]) for name in ("backend", "judge_backend") if name in obj}
        train = TrainConfig(**{**ADDED_LATER["train"], **obj["train"]})
        return cls(**{**ADDED_LATER[None], **obj, "select": select, "train": train, **backends})

    def to_json(self) -> dict:
        """As config.json holds it (tuples become lists), so a reread config compares equal. A setting added
        later is left out while it has the value that runs made before it had, so their folders reopen."""
        obj = json.loads(json.dumps({**asdict(self), "data_sha256": file_digest(Path(self.data))}))
        for part, added in ADDED_LATER.items():
            holder = obj[part] if part else obj
            for name, value in added.items():
                if holder[name] == value:
                    del holder[name]
        return obj


# Settings added after config.json was first written, by the part that holds them (None: RunConfig's own),
# with the value that reproduces runs made before them.
ADDED_LATER = {None: {"graders": []}, "train": {"recheck": 1.0}}


@dataclass(frozen=True)
class Setting:
    path: tuple[str, ...]  # attributes from a RunConfig down to the value
    default: object
    option: Option

    @property
    def name(self) -> str:
        return self.option.name or self.path[-1]


def settings(cls=RunConfig, path: tuple[str, ...] = ()) -> list[Setting]:
    """Every setting the commands take, in the order of the fields, which is the order `--help` lists."""
    found = []
    for f in fields(cls):
        default = f.default if f.default_factory is MISSING else f.default_factory()
        if "option" in f.metadata:
            found.append(Setting(path + (f.name,), default, f.metadata["option"]))
        elif "options" in f.metadata:  # a Backend, whose options depend on whom it serves
            found += [Setting(path + (f.name, name), getattr(default, name), option)
                      for name, option in f.metadata["options"].items()]
        elif is_dataclass(default):
            found += settings(type(default), path + (f.name,))
    return found


def value_at(config, path: tuple[str, ...]):
    for name in path:
        config = getattr(config, name)
    return config


def options_of(config: RunConfig) -> dict:
    """The settings of a config by their option names, with its data and model: config.yaml."""
    return {"data": config.data, "model": config.model,
            **{s.name: value_at(config, s.path) for s in settings()}}


def config_from_options(data: str | None, model: str | None, **values) -> RunConfig:
    """The RunConfig of the commands' options, by option name (a --config file's keys)."""
    top: dict = {}
    parts: dict[str, dict] = {}  # select, train and the backends: their fields
    for s in settings():
        value = sorted(values[s.name]) if s.option.multiple else values[s.name]  # given in any order, one config
        if len(s.path) == 1:
            top[s.path[0]] = value
        else:
            parts.setdefault(s.path[0], {})[s.path[1]] = value
    made = {f.name: f.default_factory(**parts[f.name]) for f in fields(RunConfig) if f.name in parts}
    # One --seed draws the splits and the replayed records, and seeds training.
    made["train"].seed = top["seed"]
    return resolve_config(data, model, **top, **made)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_fingerprint(config: RunConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode()).hexdigest()[:8]


def resolve_config(data: str | None, model: str | None, **options) -> RunConfig:
    """Fill in the defaults and turn paths absolute, so the config names exactly what ran."""
    data_path = Path(data).resolve() if data else default_dataset()
    if not data_path.is_file():  # its digest names the run, before any record is read
        raise DataError(f"{data}: " + ("not a file" if data_path.exists() else "no such file"))
    config = RunConfig(data=str(data_path), model=str(resolve_model(model).resolve()), **options)
    for name, backend in [("--backend", config.backend), ("--judge-backend", config.judge_backend)]:
        if BACKENDS[backend.kind].remote and not backend.base_url:
            raise ConfigError(f"{name} {backend.kind} needs the server's URL (--base-url / --judge-base-url)")
    if config.diagnosis == "probe" and BACKENDS[config.backend.kind].remote:
        raise ConfigError("--diagnosis probe scores the reference inside the model: it needs --backend mlx")
    chosen = graders_by_kind(config.graders)
    if len(chosen) < len(config.graders) or not set(chosen) <= set(KINDS) or not all(chosen.values()):
        raise ConfigError(f"--grader {' '.join(config.graders)}: give KIND=NAME, once per kind of {', '.join(KINDS)}")
    if judged := set(chosen) & set(config.judge_kinds):
        raise ConfigError(f"--grader and --judge-kind both name {', '.join(sorted(judged))}: a kind is graded one way")
    for name in chosen.values():
        GRADERS[name]  # an unknown grader, or a plug-in that cannot be loaded, stops the run before any work
    return config
