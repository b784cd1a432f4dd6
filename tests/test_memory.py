"""Saved-tensor accounting and the memory benchmark (bgpo/memory.py)."""

from __future__ import annotations

import json

import pytest
import torch

from bgpo.cli import main as cli
from bgpo.errors import BGPOError
from bgpo.memory import SavedTensorMeter, bench_memory, ratios


def test_meter_counts_saved_bytes_once_and_releases_them_after_backward():
    a = torch.randn(1000, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(1000))
    meter = SavedTensorMeter([w])
    with meter:
        b = a.exp()  # saves its output: 4000 bytes
        c = (b * w).sum()  # saves b (already counted) and w (a parameter: excluded)
        assert meter.current == 4000
        c.backward()
    assert meter.peak == 4000 and meter.current == 0


def test_bgpo_memory_is_flat_and_elbo_grows_linearly_in_n_t():
    records = bench_memory("tiny", seq_len=24, prompt_len=8, batch=2, n_ts=(1, 4), repeats=1,
                           objectives=("bgpo", "elbo", "d1"), progress=False)
    by = {(r.objective, r.n_t): r for r in records}
    # flat up to the mask-count-dependent loss head (one sample's graph whatever n_t)
    assert by["bgpo", 4].activation_bytes / by["bgpo", 1].activation_bytes <= 1.01
    assert by["elbo", 1].activation_bytes == pytest.approx(by["bgpo", 1].activation_bytes, rel=1e-3)
    assert 3.8 <= by["elbo", 4].activation_bytes / by["elbo", 1].activation_bytes <= 4.0
    rows = {(r["objective"], r["n_t"]): r for r in ratios(records)}
    assert rows["elbo", 4]["memory_ratio"] == pytest.approx(by["elbo", 4].activation_bytes / by["elbo", 1].activation_bytes)
    assert rows["bgpo", 1]["time_vs_elbo"] > 0


def test_bench_cli_writes_json_and_rejects_bad_flags(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli(["bench", "memory", "--preset", "tiny", "--seq-len", "16", "--prompt-len", "4", "--batch", "2",
                "--n-t", "1,2", "--objectives", "bgpo", "--repeats", "1", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["n_t"] for r in records] == [1, 2]
    assert {"objective", "n_t", "activation_bytes", "peak_bytes", "seconds", "device"} <= set(records[0])
    assert cli(["bench", "memory", "--preset", "tiny", "--n-t", "0,2"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    with pytest.raises(BGPOError, match="prompt_len"):
        bench_memory("tiny", seq_len=8, prompt_len=8, n_ts=(1,), progress=False)


def test_an_out_of_memory_configuration_is_a_result_and_the_run_goes_on(monkeypatch):
    import bgpo.memory as bm

    real = bm.measure_update

    def tight_gpu(objective, model, n_t, tensors, **kw):
        if objective == "elbo" and n_t == 4:  # as the ELBO objective at n_t=32 on the H100
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 48.00 MiB.")
        return real(objective, model, n_t, tensors, **kw)

    monkeypatch.setattr(bm, "measure_update", tight_gpu)
    records = bench_memory("tiny", seq_len=24, prompt_len=8, batch=2, n_ts=(1, 4), repeats=2,
                           objectives=("bgpo", "elbo"), progress=False)
    by = {(r.objective, r.n_t): r for r in records}
    assert by["elbo", 4].oom and by["elbo", 4].activation_bytes is None
    assert not any(r.oom for k, r in by.items() if k != ("elbo", 4)) and by["bgpo", 4].activation_bytes > 0
    rows = {(r["objective"], r["n_t"]): r for r in ratios(records)}
    assert rows["elbo", 4]["memory_ratio"] is None and rows["bgpo", 4]["time_vs_elbo"] is None
    assert rows["bgpo", 1]["time_vs_elbo"] > 0
    assert "out of memory" in bm.format_table(records)


def test_bench_builds_the_model_in_the_asked_dtype():
    from bgpo.memory import build_bench_model

    model = build_bench_model("tiny", "cpu", "bfloat16", n_layers=1)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.config.n_layers == 1
    with pytest.raises(BGPOError, match="--dtype"):
        build_bench_model("tiny", "cpu", "int8")


def test_bench_sampler_reports_tokens_per_second(tmp_path, capsys):
    out = tmp_path / "sampler.json"
    assert cli(["bench", "sampler", "--preset", "tiny", "--batch", "2", "--prompt-len", "4", "--gen-length", "8",
                "--steps", "8", "--block-length", "4", "--repeats", "1", "--generators", "device,cpu",
                "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["generator"] for r in rows] == ["device", "cpu"]
    assert all(r["tokens_per_s"] == pytest.approx(2 * 8 / r["seconds"]) for r in rows)
    assert "tokens/s" in capsys.readouterr().out
    assert cli(["bench", "sampler", "--preset", "tiny", "--generators", "gpu"]) == 2
