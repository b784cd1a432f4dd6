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
    elbo_ratio = by["elbo", 4].activation_bytes / by["elbo", 1].activation_bytes
    assert rows["elbo", 4]["memory_ratio"] == pytest.approx(elbo_ratio)
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
    assert rows[0]["cache"] == "none"  # without --cache: the exact sampler, as before


def test_bench_sampler_measures_every_cache_mode_with_its_counted_positions(tmp_path, capsys):
    from bgpo.diffusion import sampler_positions

    out = tmp_path / "sampler.json"
    assert cli(["bench", "sampler", "--preset", "tiny", "--batch", "3", "--prompt-len", "5", "--gen-length", "8",
                "--steps", "8", "--block-length", "4", "--repeats", "1", "--cache", "none,prefix,dual",
                "--horizon", "2", "--refresh", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["cache"] for r in rows] == ["none", "prefix", "dual"]
    table = capsys.readouterr().out.splitlines()
    printed = {line.split()[0]: line.split() for line in table[1:4]}
    assert list(printed) == ["none", "prefix", "dual"] and table[0].split()[0] == "cache"
    naive = sampler_positions(5, 8, 8, 4)
    for r in rows:
        horizon, refresh = (2 if r["cache"] == "prefix" else None), (None if r["cache"] == "none" else 2)
        assert (r["horizon"], r["refresh"]) == (horizon, refresh)
        expected = sampler_positions(5, 8, 8, 4, r["cache"], horizon, refresh)
        assert r["positions"] == 3 * expected and r["positions_per_seq"] == expected
        assert r["positions_per_token"] == pytest.approx(expected / 8)
        assert r["positions_ratio"] == pytest.approx(expected / naive) and r["calls"] == 8
        cells = printed[r["cache"]]
        assert int(cells[-9].replace(",", "")) == 3 * expected  # the positions column, as printed
        assert cells[-2] == f"{r['positions_ratio']:.3f}" and r["tokens_per_s"] > 0
    assert rows[0]["full_calls"] == 8 and rows[0]["positions_ratio"] == 1.0 and rows[0]["speedup"] == 1.0
    assert printed["none"][-2:] == ["1.000", "1.00x"]
    assert rows[2]["full_calls"] == 4  # two blocks: their first step and step 2 (refresh=2) of each


@pytest.mark.parametrize("argv, message", [
    (["--cache", "none,fast"], "sampler cache must be one of none, prefix, dual; got 'fast'"),
    (["--cache", "none,none"], "distinct modes"),
    (["--cache", "dual", "--horizon", "4"], "--horizon 4 applies to the prefix cache"),
    (["--refresh", "2"], "--refresh 2 refills a cache"),
    (["--cache", "prefix", "--refresh", "0"], "refresh=0"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_bench_sampler_bad_flags_are_one_line_errors(argv, message, capsys):
    assert cli(["bench", "sampler", "--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
