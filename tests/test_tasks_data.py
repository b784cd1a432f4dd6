"""Loading: local parquet (incl. verl's convention), jsonl, csv; row-level errors; hub defaults unfetched."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bgpo.errors import BGPOError
from bgpo.tasks import base, get_task


def test_verl_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    rows = [{"data_source": "countdown", "prompt": [{"role": "user", "content": f"make {t}"}],
             "reward_model": {"ground_truth": {"numbers": [1, 2, 3], "target": t}, "style": "rule"},
             "extra_info": {"index": i}} for i, t in enumerate([6, 0])]
    pq.write_table(pa.Table.from_pylist(rows), path)
    task = get_task("countdown")
    examples = task.load("train", path)
    assert [e["target"] for e in examples] == [6, 0]
    assert task.prompt(examples[0]) == [{"role": "user", "content": "make 6"}]
    assert task.reward("<answer>1+2+3</answer>", examples[0]) == 1.0


def test_jsonl_and_csv(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n\n")
    assert get_task("math").load("test", tmp_path / "m.jsonl") == [{"problem": "1+1", "answer": "2"}]
    (tmp_path / "s.csv").write_text("Puzzle,Solution\n3102200002100320,3142243142131324\n")
    assert get_task("sudoku").load("test", tmp_path / "s.csv")[0]["solution"] == "3142243142131324"


@pytest.mark.parametrize("content, message", [
    ('{"input": "1,2,3", "output": "6"}\n{"input": "1,x,3", "output": "6"}\n', r"\.jsonl: row 1: field 'numbers'"),
    ('{"input": "1,2,3"}\n', r"row 0: field 'target': missing"),
    ('{"input": "1,2,3", "output": "6"}\nnot json\n', r"line 2: not valid JSON"),
])
def test_malformed_rows_name_file_row_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BGPOError, match=message):
        get_task("countdown").load("test", path)


def test_bad_sources(tmp_path):
    with pytest.raises(BGPOError, match="unknown data file type"):
        (tmp_path / "x.txt").write_text("hi")
        get_task("math").load("test", tmp_path / "x.txt")
    with pytest.raises(BGPOError, match="neither an existing file"):
        get_task("math").load("test", "missing.jsonl")
    with pytest.raises(BGPOError, match="no hub default"):
        get_task("sudoku").load("train")
    with pytest.raises(BGPOError, match="unknown task"):
        get_task("chess")


def test_hub_defaults_go_through_datasets_without_fetching(monkeypatch):
    calls = []

    def fake_hub(name, split, config):
        calls.append((name, config, split))
        return [{"question": "q", "answer": "w\n#### 3"}] if "gsm8k" in name else [{"problem": "p", "answer": "1"}]

    monkeypatch.setattr(base, "_load_hub", fake_hub)
    assert len(get_task("math").load("train")) == 2
    assert calls == [("DigitalLearningGmbH/MATH-lighteval", None, "train"), ("openai/gsm8k", "main", "train")]
    get_task("math").load("gsm8k")
    assert calls[-1] == ("openai/gsm8k", "main", "test")
