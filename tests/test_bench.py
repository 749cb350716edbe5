from click.testing import CliRunner

from conftest import qa_rows, rows_the_model_knows, write_jsonl
from slearn_mlx.artifacts import read_json
from slearn_mlx.cli import cli


def test_bench_compares_policies_on_one_shared_diagnosis(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", rows_the_model_knows(tiny_model, qa_rows(16)))
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(data), "--model", str(tiny_model), "--out", str(out),
                                      "--epochs", "1", "--batch-size", "4", "--slick-samples", "2",
                                      "--policies", "all,unknown,replay,slick"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_json(out / "bench.json")
    assert [r["policy"] for r in rows] == ["base model", "all", "unknown", "replay", "slick", "full-data fine-tuning"]
    assert (out / "bench.png").stat().st_size > 10_000 and "| base model | 0 |" in (out / "bench.md").read_text()
    # the usual way, every record on its bare reference, no checks, charged its training alone, is the yardstick
    full = read_json(out / "full-data-fine-tuning" / "config.json")
    assert (full["select"]["policy"], full["select"]["targets"], full["train"]["check"]) == ("all", "reference", False)
    full_row = rows[-1]
    assert full_row["seconds"]["total"] == read_json(out / "full-data-fine-tuning" / "stages.json")["train"]["seconds"]
    assert full_row["record_epochs"] == 3 * full_row["trained"]
    replay_row = next(r for r in rows if r["policy"] == "replay")
    assert f"| {replay_row['seconds']['total'] / full_row['seconds']['total']:.2f} |" in (out / "bench.md").read_text()

    diagnosis = (out / "all" / "diagnosis.jsonl").read_text()
    for policy in ["unknown", "replay", "slick"]:
        assert (out / policy / "diagnosis.jsonl").read_text() == diagnosis
        assert read_json(out / policy / "stages.json")["diagnose"]["shared_from"] == str(out / "all")
        assert f"policy: {policy}" in (out / policy / "config.yaml").read_text()  # bench's runs repeat with --config
    by_policy = {r["policy"]: r for r in rows}
    stages = read_json(out / "all" / "stages.json")
    # targets in the model's own words need its answers, for `all` too; only the training records' count
    assert by_policy["all"]["seconds"]["diagnosis"] == stages["diagnose"]["method_seconds"] < stages["diagnose"]["seconds"]
    assert (out / "unknown" / "restatements.jsonl").read_text() == (out / "all" / "restatements.jsonl").read_text()
    slick_stages = read_json(out / "slick" / "stages.json")
    assert by_policy["slick"]["seconds"]["diagnosis"] == \
        slick_stages["diagnose"]["method_seconds"] + slick_stages["sample"]["seconds"]
    assert by_policy["slick"]["seconds"]["restate"] == slick_stages["restate"]["seconds"]
    # all trains every training record, unknown the unknown ones, replay those and three quarters of the known
    known, unknown = (read_json(out / "all" / "metrics.json")["accuracy"][group]["records"] for group in ("known", "unknown"))
    assert known >= 2 and unknown >= 2
    assert by_policy["all"]["trained"] == known + unknown and by_policy["unknown"]["trained"] == unknown
    assert by_policy["replay"]["trained"] == unknown + round(0.75 * known)


def test_all_on_bare_references_is_charged_no_diagnosis_and_bare_references_no_restatements():
    from slearn_mlx.policy_bench import method_seconds
    from slearn_mlx.config import RunConfig, SelectConfig

    stages = {"diagnose": {"seconds": 9.0, "method_seconds": 6.0}, "restate": {"seconds": 3.0},
              "train": {"seconds": 20.0, "check_seconds": 5.0}}
    charged = {(policy, targets): method_seconds(RunConfig("d", "m", SelectConfig(policy=policy, targets=targets)),
                                                 stages)["total"]
               for policy in ("all", "unknown") for targets in ("own", "reference")}
    # bare references need no restatements either (bench shares them with every run all the same)
    assert charged == {("all", "own"): 29.0, ("all", "reference"): 20.0, ("unknown", "own"): 29.0,
                       ("unknown", "reference"): 26.0}
