"""`bgpo score`: our JSONL and d1's JSON, per-setup named metrics; d1's six references on real LLaDA outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgpo.cli import main as cli_main
from bgpo.errors import BGPOError
from bgpo.score import score_files

GENERATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llada-instruct-generations"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_our_jsonl(tmp_path):
    rows = [
        {"task": "countdown", "numbers": [1, 2, 3], "target": 6, "completion": "<answer>1+2+3</answer>"},
        {"task": "countdown", "numbers": [1, 2, 3], "target": 6, "completion": "<answer>1+2</answer>"},
        {"task": "countdown", "numbers": [1, 2, 3], "target": 6, "completion": "nothing"},
        {"task": "sudoku", "puzzle": "3102200002100320", "solution": "3142243142131324",
         "completion": "<answer>31422431</answer>"},
    ]
    summary, details = score_files([write_jsonl(tmp_path / "run.jsonl", rows)])
    by_task = {s["task"]: s for s in summary}
    assert by_task["countdown"]["n"] == 3 and by_task["countdown"]["primary_metric"] == "d1_success"
    # d1 reads a \\boxed{} (none here: the whole text, tags included, is not an expression)
    assert by_task["countdown"]["metrics"] == pytest.approx(
        {"d1_success": 0.0, "mean_reward": 1.1 / 3, "strict_success": 1 / 3})
    assert by_task["sudoku"]["metrics"] == pytest.approx(
        {"cell_accuracy": 0.5, "d1_cell_accuracy": 0.5, "solved": 0.0})
    assert [d["reward"] for d in details if d["task"] == "countdown"] == [1.0, 0.1, 0.0]


def test_d1_json_and_cli(tmp_path, capsys):
    data = {"generations": [
        {"question": "Numbers: [1, 2, 3]\nTarget: 6", "generations": "<answer>\n3*2*1\n</answer>",
         "ground_truth": [[1, 2, 3], 6]},
        {"question": "q", "generations": "<answer>\n1+2+3+0\n</answer>", "ground_truth": [[1, 2, 3], 6]},
        {"question": "q", "generations": "so \\boxed{1+2+3}", "ground_truth": [[1, 2, 3], 6]}]}
    folder = tmp_path / "gens"
    folder.mkdir()
    (folder / "countdown_instruct_256_128_0_generations.json").write_text(json.dumps(data))
    (folder / "countdown_instruct_256_128_1_generations.json").write_text(json.dumps(data))
    out = tmp_path / "score.json"
    assert cli_main(["score", str(folder), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["setup"] == "countdown_instruct_256_128" and row["files"] == 2 and row["n"] == 6
    assert row["metrics"] == pytest.approx({"d1_success": 1 / 3, "mean_reward": 1.1 / 3, "strict_success": 1 / 3})
    assert ("countdown_instruct_256_128         countdown      6        0  "
            "d1_success* 33.33  mean_reward 36.67  strict_success 33.33") in capsys.readouterr().out


def test_d1_metrics_count_skipped_rows_as_wrong(tmp_path):
    data = {"generations": [{"question": "q", "generations": "\\boxed{18}", "ground_truth": 18.0},
                            {"question": "q", "generations": "\\boxed{5}", "ground_truth": None}]}
    (tmp_path / "gsm8k_x_0_generations.json").write_text(json.dumps(data))
    (row,) = score_files([tmp_path])[0]
    assert row["n"] == 1 and row["skipped"] == 1
    assert row["metrics"] == {"boxed_equiv": 1.0, "d1_accuracy": 0.5}  # d1: 1 right of 2 rows


def test_errors_name_the_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"task": "countdown", "numbers": [1], "target": 1}])
    with pytest.raises(BGPOError, match="line 1: field 'completion'"):
        score_files([path])
    assert cli_main(["score", str(path)]) == 2
    assert "line 1: field 'completion'" in capsys.readouterr().err
    with pytest.raises(BGPOError, match="--task"):
        score_files([write_jsonl(tmp_path / "notask.jsonl", [{"completion": "x"}])])


# d1's reference accuracies (%) for its published LLaDA-8B-Instruct generations, by its own parser.
D1_REFERENCES = {"gsm8k_instruct_256_128": 76.37, "math500_instruct_256_128": 32.40,
                 "countdown_instruct_256_128": 19.53, "countdown_instruct_512_256": 16.02,
                 "sudoku_instruct_256_128": 6.69, "sudoku_instruct_512_256": 5.47}
D1_METRIC = {"math": "d1_accuracy", "countdown": "d1_success", "sudoku": "d1_cell_accuracy"}


def assert_d1_references(summary: list[dict]) -> dict[str, dict]:
    by_setup = {s["setup"]: s for s in summary}
    for setup, row in by_setup.items():
        assert 100 * row["metrics"][D1_METRIC[row["task"]]] == pytest.approx(D1_REFERENCES[setup], abs=0.01)
    return by_setup


@pytest.mark.skipif(not GENERATIONS.exists(), reason="needs ../shared/data/llada-instruct-generations")
def test_real_llada_planning_generations():
    """d1's references to 0.01, and our strict numbers (book/data/score-check.md explains the gaps)."""
    files = sorted(GENERATIONS.glob("countdown_*")) + sorted(GENERATIONS.glob("sudoku_*"))
    summary = assert_d1_references(score_files(files)[0])
    assert len(summary) == 4 and summary["countdown_instruct_256_128"]["n"] == 256
    countdown = summary["countdown_instruct_256_128"]["metrics"]
    assert countdown["strict_success"] == 0  # all answers wrapped in \\boxed{}
    assert countdown["mean_reward"] == pytest.approx(0.0785, abs=5e-5)  # 0.1 x 201 / 256: format credit
    assert summary["sudoku_instruct_256_128"]["metrics"]["cell_accuracy"] == pytest.approx(0.0591, abs=5e-5)
    assert summary["sudoku_instruct_512_256"]["metrics"]["cell_accuracy"] == pytest.approx(0.0479, abs=5e-5)
    assert summary["sudoku_instruct_512_256"]["metrics"]["solved"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not GENERATIONS.exists(), reason="needs ../shared/data/llada-instruct-generations")
def test_real_llada_math_generations():
    files = sorted(GENERATIONS.glob("gsm8k_*")) + sorted(GENERATIONS.glob("math500_*"))
    summary = assert_d1_references(score_files(files)[0])
    assert len(summary) == 2
    assert summary["gsm8k_instruct_256_128"]["skipped"] == 2  # reference answer null in d1's files
    assert 100 * summary["gsm8k_instruct_256_128"]["metrics"]["boxed_equiv"] == pytest.approx(75.89, abs=0.01)
    assert 100 * summary["math500_instruct_256_128"]["metrics"]["boxed_equiv"] == pytest.approx(35.0, abs=0.01)
