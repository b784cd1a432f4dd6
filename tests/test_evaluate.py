"""bgpo eval / export / generate on a checkpoint of a one-step tiny run."""

import json

import pytest
import torch

from bgpo.config import load_config
from bgpo.errors import BGPOError
from bgpo.checkpoint import latest_checkpoint
from bgpo.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_train import tiny

    tmp = tmp_path_factory.mktemp("eval")
    return train(load_config(tiny(tmp, trainer={"steps": 1})))


def test_eval_writes_generations_and_scores(run, tmp_path):
    from bgpo.evaluate import evaluate_checkpoint

    summary = evaluate_checkpoint(latest_checkpoint(run), limit=3, output_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert summary["n"] == len(rows) == 3 and summary["steps"] == summary["gen_length"] == 8  # one token per step
    assert summary["strict_success"] == sum(r["reward"] == 1.0 for r in rows) / 3
    assert summary["mean_reward"] == pytest.approx(sum(r["reward"] for r in rows) / 3)
    assert json.loads((tmp_path / "scores.json").read_text())["task"] == "countdown"
    again = evaluate_checkpoint(run / "final", limit=3, output_dir=tmp_path / "again")  # greedy: same output
    assert again["mean_reward"] == summary["mean_reward"] and again["d1_success"] == summary["d1_success"]


def test_export_is_a_plain_hf_directory(run, tmp_path):
    from transformers import AutoTokenizer

    from bgpo.export import export
    from bgpo.model import LLaDAModelLM

    out = export(latest_checkpoint(run), tmp_path / "hf")
    model = LLaDAModelLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    final = LLaDAModelLM.from_pretrained(run / "final")
    for (name, a), b in zip(model.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), name
    assert tok.mask_token_id == model.config.mask_token_id
    with pytest.raises(BGPOError, match="not empty"):
        export(latest_checkpoint(run), out)


def test_generate_from_free_prompts_and_task(run):
    from bgpo.generate import generate_text

    rows = generate_text(run / "final", ["3 4 5 = 17", "1 2 3 = 6"], gen_length=8)
    assert [r["prompt"] for r in rows] == ["3 4 5 = 17", "1 2 3 = 6"] and all(isinstance(r["completion"], str) for r in rows)
    rows = generate_text(run / "final", task="countdown", style="compact", limit=2, gen_length=8)
    assert len(rows) == 2 and "numbers" in rows[0]["example"]
