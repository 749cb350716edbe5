"""`adapt` as two ranks under mlx.launch (ring backend, loopback) ends where one process does."""

import subprocess
import sys

import mlx.core as mx

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json, read_rows


def test_two_ranks_adapt_like_one_process(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(24))
    adapt = [sys.executable, "-m", "slearn_mlx", "adapt", str(data), "--model", str(tiny_model), "--epochs", "2",
             "--batch-size", "4", "--validation", "0", "--answer-batch-size", "4"]
    one = subprocess.run([*adapt, "--out", str(tmp_path / "one")], cwd=REPO, check=True, capture_output=True, text=True,
                         timeout=300)
    assert "%|" not in one.stderr and "\r" not in one.stderr  # stderr is no terminal here: no progress bars in it
    for attempt in range(2):
        # --processes 2 starts the same command under mlx.launch's ring backend, which takes two ports from a
        # free one; on a busy machine another process can take the second before it binds, so try once more.
        two = subprocess.run([*adapt, "--processes", "2", "--out", str(tmp_path / "two")], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        if two.returncode == 0:
            break
    assert two.returncode == 0, two.stderr[-2000:]

    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    assert not list(two_dir.glob("*.rank*"))  # the ranks' files are merged into the run's own
    for name in ["diagnosis.jsonl", "selection.jsonl", "evaluation.jsonl"]:
        rows = read_rows(two_dir / name)
        assert len(rows) == len({row["id"] for row in rows})
        # Greedy answers do not depend on which rank, or which batch, a record was answered in.
        assert sorted(rows, key=lambda r: r["id"]) == sorted(read_rows(one_dir / name), key=lambda r: r["id"]), name
    stages = read_json(two_dir / "stages.json")
    assert stages["train"]["batch_size"] == 4 and {facts["ranks"] for facts in stages.values()} == {2}
    # Each rank takes 2 of every batch of 4 and mlx-lm averages the ranks' gradients, each the mean over
    # its own answer tokens; one process takes the mean over all of them. The two agree when the ranks'
    # token counts do, as nearly here ("Item N" answers); they would differ a little otherwise.
    one, two_adapter = (mx.load(str(d / "adapter" / "adapters.safetensors")) for d in (one_dir, two_dir))
    assert one.keys() == two_adapter.keys()
    assert all(mx.allclose(one[k], two_adapter[k], atol=1e-5).item() for k in one)


def test_batch_size_is_rounded_to_a_multiple_of_the_ranks(monkeypatch):
    from slearn_mlx import distributed, train

    monkeypatch.setattr(distributed, "size", lambda: 3)
    assert [train.ranks_batch_size(b) for b in (8, 6, 2)] == [6, 6, 3]
