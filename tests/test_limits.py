"""Limits and safety: a full disk refuses to start, only safetensors and no remote code are loaded."""

import json
import shutil
from collections import namedtuple

import pytest

from conftest import qa_rows, write_jsonl
from slearn_mlx.config import resolve_config
from slearn_mlx.run import RunError, create_run
from slearn_mlx.models import ModelError, load_model

Usage = namedtuple("Usage", "total used free")


def test_a_run_the_disk_cannot_hold_refuses_to_start(tiny_model, tmp_path, monkeypatch):
    config = resolve_config(str(write_jsonl(tmp_path / "d.jsonl", qa_rows(4))), str(tiny_model))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(RunError, match=r"the run needs about \d+ MB and .* has 0 MB free"):
        create_run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_gguf_import_the_disk_cannot_hold_is_refused(tmp_path, monkeypatch):
    from slearn_mlx.models import import_into_store

    gguf = tmp_path / "big.gguf"
    gguf.write_bytes(b"\0" * 10_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 100, 100))
    with pytest.raises(ModelError, match="importing big.gguf needs about 0 MB in .* which has 0 MB free"):
        import_into_store(gguf)


def test_a_model_that_asks_to_run_its_own_code_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_file": "evil.py"}))
    (folder / "evil.py").write_text("raise SystemExit('remote code ran')")
    with pytest.raises(ModelError, match="custom module"):
        load_model(folder)


def test_pickled_weights_are_never_read(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="No safetensors"):
        load_model(folder)
