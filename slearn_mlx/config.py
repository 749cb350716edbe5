"""The run configuration: what a run does, and each setting's default.

A run's config.json is RunConfig as JSON, with the data file's sha256: a run folder made with
another configuration or other data is refused (run.py).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .backends import KINDS, Backend
from .data import default_dataset
from .grade import JUDGED_KINDS
from .judge import JUDGE_THRESHOLD
from .models import resolve_model

POLICIES = ("unknown", "all", "replay", "slick")
TARGETS = ("own", "reference")


class ConfigError(ValueError):
    """A configuration that cannot run."""


@dataclass
class SelectConfig:
    # replay by default: on the default data it kept more of what the model knew and scored best on
    # the whole set (bench, README "Comparing policies"); `unknown` is the paper's rule, for comparison.
    policy: str = "replay"
    # Share of the known training records replayed: with a learning rate of 1e-4, 0.75 kept the most of
    # the known on the default data and two shared sets (benchmarks/settings.py, README "Choosing the defaults").
    replay_fraction: float = 0.75
    targets: str = "own"  # or "reference": the bare reference answer, as the paper trains
    slick_samples: int = 4
    slick_temperature: float = 0.7
    slick_keep: tuple[str, ...] = ("MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8
    # 1e-4 with a replay share of 0.75 kept the most of the known and scored best on the whole set of
    # the settings measured on the default data and two shared sets (README "Choosing the defaults").
    learning_rate: float = 1e-4
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_layers: int = 16  # the last N transformer blocks get adapters, on every linear layer
    max_seq_length: int = 1024
    seed: int = 0
    patience: int = 1  # epochs without a better objective before stopping; the best epoch is kept
    max_seconds: float | None = None  # a wall-time budget for training, for equal-budget comparisons
    # Weight of KL(base || adapted) over the answer tokens of the records the model already knew: a pull
    # back toward what it said before training, on the records where that was right. 0: off.
    kl_weight: float = 0.0
    check: bool = True  # after each epoch: learned records leave, forgotten ones return, the best epoch is kept
    rehearsal: float = 1.0  # right records trained again in an epoch after the first, per record still wrong


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
    backend: Backend = field(default_factory=Backend)
    judge_backend: Backend = field(default_factory=Backend)
    concurrency: int = 4  # requests in flight to a server

    @classmethod
    def from_json(cls, obj: dict) -> "RunConfig":
        select = SelectConfig(**{**obj["select"], "slick_keep": tuple(obj["select"]["slick_keep"])})
        backends = {name: Backend(**obj[name]) for name in ("backend", "judge_backend") if name in obj}
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
        if KINDS[backend.kind].remote and not backend.base_url:
            raise ConfigError(f"{name} {backend.kind} needs the server's URL (--base-url / --judge-base-url)")
    if config.diagnosis == "probe" and KINDS[config.backend.kind].remote:
        raise ConfigError("--diagnosis probe scores the reference inside the model: it needs --backend mlx")
    return config
