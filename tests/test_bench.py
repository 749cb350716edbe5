from click.testing import CliRunner

from conftest import qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json
from slearn_mlx.cli import cli


def test_bench_compares_policies_on_one_shared_diagnosis(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(16))
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(data), "--model", str(tiny_model), "--out", str(out),
                                      "--epochs", "1", "--batch-size", "4", "--slick-samples", "2",
                                      "--policies", "all,unknown,replay,slick"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_json(out / "bench.json")
    assert [r["policy"] for r in rows] == ["base model", "all", "unknown", "replay", "slick"]
    assert (out / "bench.png").stat().st_size > 10_000 and "| base model | 0 |" in (out / "bench.md").read_text()

    diagnosis = (out / "all" / "diagnosis.jsonl").read_text()
    for policy in ["unknown", "replay", "slick"]:
        assert (out / policy / "diagnosis.jsonl").read_text() == diagnosis
        assert read_json(out / policy / "stages.json")["diagnose"]["shared_from"] == str(out / "all")
    by_policy = {r["policy"]: r for r in rows}
    assert by_policy["all"]["seconds"]["diagnosis"] == 0  # `all` needs no answers
    slick_stages = read_json(out / "slick" / "stages.json")
    assert by_policy["slick"]["seconds"]["diagnosis"] == \
        slick_stages["diagnose"]["seconds"] + slick_stages["sample"]["seconds"]
    # with no known records, unknown, replay and all train on the same records
    assert by_policy["all"]["trained"] == by_policy["unknown"]["trained"] == by_policy["replay"]["trained"]
