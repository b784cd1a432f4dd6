"""`bgpo score`: our JSONL and d1's JSON, per-setup correct rate and mean reward; real LLaDA outputs."""

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
    assert by_task["countdown"]["n"] == 3
    assert by_task["countdown"]["correct_rate"] == pytest.approx(1 / 3)
    assert by_task["countdown"]["mean_reward"] == pytest.approx(1.1 / 3)
    assert by_task["sudoku"]["mean_reward"] == pytest.approx(0.5) and by_task["sudoku"]["correct_rate"] == 0
    assert [d["reward"] for d in details if d["task"] == "countdown"] == [1.0, 0.1, 0.0]


def test_d1_json_and_cli(tmp_path, capsys):
    data = {"generations": [
        {"question": "Numbers: [1, 2, 3]\nTarget: 6", "generations": "<answer>\n3*2*1\n</answer>",
         "ground_truth": [[1, 2, 3], 6]},
        {"question": "q", "generations": "<answer>\n1+2+3+0\n</answer>", "ground_truth": [[1, 2, 3], 6]}]}
    folder = tmp_path / "gens"
    folder.mkdir()
    (folder / "countdown_instruct_256_128_0_generations.json").write_text(json.dumps(data))
    (folder / "countdown_instruct_256_128_1_generations.json").write_text(json.dumps(data))
    out = tmp_path / "score.json"
    assert cli_main(["score", str(folder), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["setup"] == "countdown_instruct_256_128" and row["files"] == 2 and row["n"] == 4
    assert row["correct_rate"] == 0.5 and row["mean_reward"] == pytest.approx(0.55)
    assert "countdown_instruct_256_128" in capsys.readouterr().out


def test_errors_name_the_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"task": "countdown", "numbers": [1], "target": 1}])
    with pytest.raises(BGPOError, match="line 1: field 'completion'"):
        score_files([path])
    assert cli_main(["score", str(path)]) == 2
    assert "line 1: field 'completion'" in capsys.readouterr().err
    with pytest.raises(BGPOError, match="--task"):
        score_files([write_jsonl(tmp_path / "notask.jsonl", [{"completion": "x"}])])


@pytest.mark.skipif(not GENERATIONS.exists(), reason="needs ../shared/data/llada-instruct-generations")
def test_real_llada_planning_generations():
    """Pinned numbers on LLaDA-8B-Instruct's real outputs (see book/data/score-check.md for the gaps)."""
    files = sorted(GENERATIONS.glob("countdown_*")) + sorted(GENERATIONS.glob("sudoku_*"))
    summary = {s["setup"]: s for s in score_files(files)[0]}
    assert summary["countdown_instruct_256_128"]["n"] == 256
    assert summary["countdown_instruct_256_128"]["correct_rate"] == 0  # all answers wrapped in \boxed{}
    assert summary["countdown_instruct_256_128"]["mean_reward"] == pytest.approx(0.0785, abs=5e-4)
    assert summary["sudoku_instruct_256_128"]["mean_reward"] == pytest.approx(0.0591, abs=5e-4)
    assert summary["sudoku_instruct_512_256"]["mean_reward"] == pytest.approx(0.0479, abs=5e-4)


@pytest.mark.slow
@pytest.mark.skipif(not GENERATIONS.exists(), reason="needs ../shared/data/llada-instruct-generations")
def test_real_llada_math_generations_match_d1_within_points():
    summary = {s["setup"]: s for s in score_files(sorted(GENERATIONS.glob("gsm8k_*"))
                                                  + sorted(GENERATIONS.glob("math500_*")))[0]}
    assert abs(100 * summary["gsm8k_instruct_256_128"]["correct_rate"] - 76.37) < 1.0
    assert summary["gsm8k_instruct_256_128"]["skipped"] == 2  # reference answer null in d1's files
    assert 100 * summary["math500_instruct_256_128"]["correct_rate"] == pytest.approx(35.0, abs=0.01)
