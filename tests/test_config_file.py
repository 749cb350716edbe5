"""--config: options from YAML or TOML, the command line over them, and a run's config.yaml repeats it."""

import pytest
from click.testing import CliRunner

from conftest import qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json
from slearn_mlx.cli import cli
from slearn_mlx.config import resolve_config
from slearn_mlx.config_file import ConfigFileError
from slearn_mlx.run import create_run


def diagnose(*args):
    result = CliRunner().invoke(cli, ["diagnose", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_file_options_with_command_line_override_and_the_saved_file_repeats_the_run(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(4))
    (tmp_path / "c.toml").write_text(f'data = "{data}"\nmodel = "{tiny_model}"\nheld-out = 0.5\nepochs = 7\n'
                                     'learning_rate = 1e-3\nseed = 1\n')
    diagnose("--config", tmp_path / "c.toml", "--seed", "5", "--out", tmp_path / "run")
    config = read_json(tmp_path / "run" / "config.json")
    assert (config["held_out_fraction"], config["train"]["epochs"], config["train"]["learning_rate"]) == (0.5, 7, 1e-3)
    assert config["seed"] == config["train"]["seed"] == 5  # the command line wins

    diagnose("--config", tmp_path / "run" / "config.yaml", "--out", tmp_path / "again")
    assert read_json(tmp_path / "again" / "config.json") == config


def test_a_run_started_from_python_keeps_its_options_too(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(4))
    create_run(resolve_config(str(data), str(tiny_model), held_out_fraction=0.5, judge_threshold=0.7), tmp_path / "api")
    diagnose("--config", tmp_path / "api" / "config.yaml", "--out", tmp_path / "cli")
    assert read_json(tmp_path / "cli" / "config.json") == read_json(tmp_path / "api" / "config.json")


@pytest.mark.parametrize("name, text, problem", [
    ("c.yaml", "epochs: 2\nlearnig_rate: 0.1\n", r"c\.yaml: unknown option 'learnig_rate'; the options are .*learning-rate"),
    ("c.yaml", "epochs: [2\n", r"c\.yaml:2: invalid YAML"),
    ("c.yaml", "- 2\n", r"c\.yaml: expected a mapping"),
    ("c.toml", "epochs = \n", r"c\.toml: invalid TOML"),
    ("c.json", "{}", r"c\.json: a configuration file ends in .yaml, .yml or .toml"),
])
def test_bad_configuration_files_name_file_and_problem(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigFileError, match=problem):
        CliRunner().invoke(cli, ["adapt", "--config", str(tmp_path / name)], catch_exceptions=False)


# A default config.json as written before the settings moved into config.py, whose fields are in
# another order now; the data file's digest left out.
EARLIER_CONFIG = {
    "data": "/data/d.jsonl", "model": "/models/m",
    "select": {"policy": "replay", "replay_fraction": 0.75, "targets": "own", "slick_samples": 4,
               "slick_temperature": 0.7, "slick_keep": ["MaybeKnown", "WeaklyKnown", "Unknown"]},
    "train": {"epochs": 3, "batch_size": 8, "learning_rate": 0.0001, "lora_rank": 8, "lora_scale": 20.0,
              "lora_layers": 16, "max_seq_length": 1024, "seed": 0, "patience": 1, "max_seconds": None,
              "kl_weight": 0.0, "check": True, "rehearsal": 1.0},
    "held_out_fraction": 0.2, "validation_fraction": 0.1, "seed": 0, "diagnosis": "generate", "probe_threshold": -1.0,
    "answer_batch_size": 64, "judge_model": None, "judge_kinds": [], "judge_threshold": 0.5,
    "backend": {"kind": "mlx", "base_url": None, "api_key_env": None, "model": None},
    "judge_backend": {"kind": "mlx", "base_url": None, "api_key_env": None, "model": None}, "concurrency": 4,
}


def test_an_earlier_config_json_loads_as_it_was_and_names_the_same_run_folder(monkeypatch):
    from slearn_mlx import config as config_module
    from slearn_mlx.config import RunConfig, SelectConfig, TrainConfig, config_fingerprint

    monkeypatch.setattr(config_module, "file_digest", lambda path: "0" * 64)
    config = RunConfig.from_json(EARLIER_CONFIG)
    assert config.to_json() == {**EARLIER_CONFIG, "data_sha256": "0" * 64}  # so create_run reopens its folder
    assert config == RunConfig("/data/d.jsonl", "/models/m", select=SelectConfig(policy="replay"),
                               train=TrainConfig(epochs=3, patience=1))  # its defaults then
    assert config_fingerprint(config) == "b355789e"  # the default folder's name, as the earlier code made it
