"""Planner: its activation model against bgpo.memory's exact saved-tensor count, its verdicts, the H100's
memory measurements, and its time model against the H200's measured update and sampler."""

import json
from pathlib import Path

import pytest
import torch

from bgpo.config import load_config
from bgpo.errors import BGPOError
from bgpo.memory import measure_update, synthetic_rollouts
from bgpo.model import LLaDAModelLM, preset_config
from bgpo.objectives import build_batch
from bgpo.plan import compare, max_n_t, n_params, plan, saved_bytes, time_plan

H100 = Path(__file__).resolve().parents[1] / "book" / "data" / "gpu-h100"
H200 = Path(__file__).resolve().parents[1] / "book" / "data" / "gpu-h200"


@pytest.mark.parametrize("overrides, batch, seq_len, prompt_len", [
    ({}, 4, 48, 16),
    ({"d_model": 96, "mlp_hidden_size": 256, "n_heads": 6, "n_kv_heads": 6, "n_layers": 3}, 2, 64, 24),
])
@pytest.mark.parametrize("objective, n_t", [("bgpo", 4), ("elbo", 3)])
def test_activation_model_matches_bench_memory_within_10_percent(overrides, batch, seq_len, prompt_len,
                                                                 objective, n_t):
    torch.manual_seed(0)
    cfg = preset_config("tiny", **overrides)
    model = LLaDAModelLM(cfg)
    tensors = synthetic_rollouts(cfg.vocab_size, batch, seq_len, prompt_len, 2, torch.device("cpu"))
    measured = measure_update(objective, model, n_t, tensors, seed=0)[0]
    ids, attention, response, advantages = tensors
    masks = build_batch(objective, ids, attention, response, advantages, n_t, torch.Generator().manual_seed(0)).masks
    per_sample = [saved_bytes(cfg, batch, seq_len, int(k)) for k in masks.sum((0, 2))]  # |M_j| over the batch
    predicted = max(per_sample) if objective == "bgpo" else sum(per_sample)  # one graph at a time vs all n_t
    assert predicted == pytest.approx(measured, rel=0.10)
    assert predicted == pytest.approx(measured, rel=0.01)  # in fact within 1% (the docstring's claim)


def test_parameter_count_of_llada_8b():
    assert n_params(preset_config("llada-8b")) == pytest.approx(8.02e9, rel=0.01)
    m = preset_config("tiny")
    assert n_params(m) == sum(p.numel() for p in LLaDAModelLM(m).parameters())


def test_bgpo_memory_is_flat_in_n_t_and_elbo_grows_linearly():
    cfg = load_config("llada8b-math")
    b1, b2, b64 = (plan(cfg, objective="bgpo", n_t=n) for n in (1, 2, 64))
    assert b2.total_gb == b64.total_gb and b64.fits  # from the 2nd sample on the gradients exist: flat after
    assert b1.activations_gb == b64.activations_gb and b1.total_gb < b2.total_gb
    e1, e2, e4, e8 = (plan(cfg, objective="elbo", n_t=n).activations_gb for n in (1, 2, 4, 8))
    assert e8 - e4 == pytest.approx(2 * (e4 - e2)) and e4 == pytest.approx(4 * e1, rel=0.03)  # n_t copies held
    assert max_n_t(cfg, "bgpo") == 4096 and 1 <= max_n_t(cfg, "elbo") < 16  # the paper's n_t=16 needs BGPO
    assert not plan(cfg, objective="elbo", n_t=16).fits
    more_gpus = plan(cfg, objective="bgpo", gpus=16)
    assert more_gpus.optimizer_gb == pytest.approx(b1.optimizer_gb / 2)
    rows = compare(cfg, n_ts=(1, 16))
    assert {(r["objective"], r["n_t"]) for r in rows} == {("bgpo", 1), ("bgpo", 16), ("elbo", 1), ("elbo", 16),
                                                          ("d1", 1)}


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_a_sampler_cache_adds_its_keys_and_values_to_the_rollout_peak(cache):
    """2 (keys, values) x n_layers x b_gen x T x (n_kv_heads x head_dim) x c bytes, and nothing else moves."""
    base = ["rollout.batch_size=8", "model.dtype=bfloat16"]
    none = plan(load_config("llada8b-math", [*base, "rollout.cache=none", "rollout.refresh=null"]), gpus=1)
    cached = plan(load_config("llada8b-math", [*base, f"rollout.cache={cache}"]), gpus=1)
    m = preset_config("llada-8b")
    kv_bytes = 2 * m.n_layers * 8 * (512 + 512) * m.n_kv_heads * (m.d_model // m.n_heads) * 2
    assert kv_bytes == 2 * 32 * 8 * 1024 * 4096 * 2  # LLaDA-8B: 32 layers, 32 kv heads of 128: 4.3 GB
    assert cached.rollout_peak_gb * 1e9 - none.rollout_peak_gb * 1e9 == pytest.approx(kv_bytes, rel=1e-9)
    assert (cached.train_peak_gb, cached.step_peak_gb) == (none.train_peak_gb, none.step_peak_gb)


def test_plan_cli_prints_the_table(capsys):
    from bgpo.cli import main

    assert main(["plan", "--config", "llada8b-sudoku", "--objective", "elbo", "--n-t", "32"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "largest n_t that fits with bgpo: any" in out


def _measured_config(layers: int, batch: int, seq: int, prompt: int, checkpointing: bool):
    """The setting of an H100 measurement: 8B-shaped blocks in bf16, one GPU, one micro-batch."""
    return load_config("llada8b-math", [f"model.overrides={{n_layers: {layers}}}", "model.dtype=bfloat16",
                                        f"model.gradient_checkpointing={str(checkpointing).lower()}",
                                        "trainer.mixed_precision='no'", f"rollout.max_prompt_length={prompt}",
                                        f"rollout.gen_length={seq - prompt}", "rollout.steps=16",
                                        "trainer.eval_steps=16", f"objective.micro_batch_size={batch}",
                                        "optim.name=adamw-sr"])


def _h100_cases() -> list[tuple]:
    """(objective, n_t, layers, batch, seq, prompt, checkpointing, activation bytes, peak bytes) of every
    update measured on the H100 (book/data/gpu-h100/README.md)."""
    cases = []
    for name in ("cuda-llada8b-4layers-seq768-b4.json", "cuda-llada8b-4layers-seq768-b4-bgpo32.json"):
        for r in json.loads((H100 / name).read_text()):
            cases.append((r["objective"], r["n_t"], 4, r["batch"], r["seq_len"], r["prompt_len"], False,
                          r["activation_bytes"], r["peak_bytes"]))
    for name, checkpointing in (("stack-4layers-nockpt.json", False), ("full-8b-checkpointed.json", True)):
        for r in json.loads((H100 / name).read_text()):
            if r.get("case") in ("stack", "full8b") and r["ok"]:
                cases.append((r["objective"], r["n_t"], r["layers"], r["batch"], r["seq"], r["prompt"],
                              checkpointing, r["activation_MiB"] * 2**20, r["peak_MiB"] * 2**20))
    return cases


def test_plan_matches_every_h100_measurement_within_15_percent():
    """Activations held and the update's peak above weights + optimiser states, against the H100 numbers.

    Those were measured while the model still computed logits at every position: the (B, T, V) bf16 tensor
    it no longer makes (``logits_positions``) is added to the predicted peak for the comparison.
    """
    cases = _h100_cases()
    assert len(cases) == 34 and {c[6] for c in cases} == {False, True}
    errors = []
    for objective, n_t, layers, batch, seq, prompt, ckpt, activation, peak in cases:
        p = plan(_measured_config(layers, batch, seq, prompt, ckpt), objective=objective, n_t=n_t, gpus=1)
        full_logits = batch * seq * 126464 * 2
        errors += [p.activations_gb * 1e9 / activation - 1, (p.update_peak_gb * 1e9 + full_logits) / peak - 1]
    assert max(abs(e) for e in errors) < 0.15, max(errors, key=abs)


def test_plan_reproduces_the_h100_out_of_memory_and_the_adamw_peak():
    stack = [r for r in json.loads((H100 / "stack-4layers-nockpt.json").read_text()) if r.get("oom")]
    assert [(r["objective"], r["n_t"]) for r in stack] == [("elbo", 32)]
    card_gb = 79.18 * 2**30 / 1e9  # the H100's capacity in its OOM message
    cfg = _measured_config(4, 4, 768, 256, False)
    assert not plan(cfg, objective="elbo", n_t=32, gpus=1, gpu_memory_gb=card_gb).fits
    assert plan(cfg, objective="elbo", n_t=16, gpus=1, gpu_memory_gb=card_gb).fits
    full = json.loads((H100 / "full-8b-checkpointed.json").read_text())
    adamw = next(r for r in full if r["case"] == "full8b-bgpo32-adamw-bf16")  # bf16 AdamW states after n_t=32
    p = plan(_measured_config(32, 2, 768, 256, True), objective="bgpo", n_t=32, gpus=1)
    assert p.params == 8_015_581_184
    assert p.total_gb * 1e9 / 2**30 == pytest.approx(adamw["peak_total_GiB"], rel=0.05)


@pytest.mark.parametrize("task", ["math", "code", "countdown", "sudoku"])
def test_one_gpu_presets_fit_one_80_gb_gpu(task):
    cfg = load_config(f"llada8b-{task}-1gpu")
    assert (cfg.model.dtype, cfg.model.gradient_checkpointing, cfg.objective.packed) == ("bfloat16", True, True)
    assert cfg.optim.name == "adamw8bit-sr" and cfg.optim.lr == 5e-7
    assert cfg.objective.n_t == load_config(f"llada8b-{task}").objective.n_t  # the paper's n_t
    p = plan(cfg, gpus=1, gpu_memory_gb=80.0)
    assert p.fits and p.total_gb < 0.9 * 80, p.table()  # 10% left for the allocator's fragmentation
    assert p.optimizer_gb == pytest.approx(2.03 * p.params / 1e9, rel=0.01)  # 8-bit states, no master copy


def test_time_plan_predicts_the_h200_update_and_sampler_within_15_percent():
    """The update (BGPO n_t=16, 4 x 1,024 tokens, checkpointed) and the sampler (batch 8, no cache) measured
    on the H200, against the time model at the rate it derives from the same file's sampler records."""
    record = json.loads((H200 / "fullscale.json").read_text())
    sizes = record["sizes"]
    measured = next(r for r in record["sweep"] if (r["objective"], r["n_t"]) == ("bgpo", 16))
    cfg = load_config("llada8b-math-1gpu", [
        f"model.overrides={{n_layers: {sizes['layers']}}}", "rollout.prompts_per_step=1",
        f"rollout.group_size={sizes['micro_batch']}", f"rollout.max_prompt_length={sizes['prompt']}",
        f"rollout.gen_length={sizes['seq'] - sizes['prompt']}"])
    t = time_plan(cfg, objective="bgpo", n_t=16, gpus=1, gradient_checkpointing=sizes["checkpointing"])
    assert t.source == "2 sampler records of book/data/gpu-h200/fullscale.json (NVIDIA H200)"
    assert t.rows[0].update_s == pytest.approx(measured["seconds"], rel=0.15)
    for run in (r for r in record["sampler"] if r["batch"] == 8):
        cfg = load_config("llada8b-math", [
            f"model.overrides={{n_layers: {run['layers']}}}", "rollout.prompts_per_step=1",
            f"rollout.group_size={run['batch']}", f"rollout.max_prompt_length={run['prompt']}",
            f"rollout.gen_length={run['gen']}", f"rollout.steps={run['steps']}",
            f"rollout.block_length={run['block_length']}"])
        naive = next(r for r in time_plan(cfg, gpus=1).rows if r.cache == "none")
        assert naive.rollout_s == pytest.approx(run["seconds"], rel=0.15)


def test_step_time_rollout_share_and_gpu_hours_follow_from_the_parts():
    t = time_plan("llada8b-math", gpus=8, tflops=100.0)
    P, N, T, rate = 8_015_581_184, 16 * 8, 512 + 512, 8 * 100e12  # the preset's shape; 8 GPUs at 100 TFLOP/s
    assert t.params == P and (t.sequences, t.n_t, t.checkpointing, t.run_steps) == (N, 16, False, 700)
    naive = t.rows[0]
    assert (naive.cache, naive.positions) == ("none", 256 * T)  # 256 steps over all T
    shipped = next(r for r in t.rows if r.config)  # the preset's own sampler: dual, refreshed every 4 steps
    assert shipped.label == "dual r=4" and shipped.positions == 16 * (4 * T + 12 * 32)
    assert naive.rollout_s == pytest.approx(N * 256 * T * 2 * P / rate)
    assert naive.old_s == pytest.approx(16 * 2 * P * N * T / rate)
    assert naive.update_s == pytest.approx(16 * 6 * P * N * T / rate)
    assert naive.shift_s == pytest.approx(2 * P * N * T / rate)
    for r in t.rows:
        assert r.step_s == pytest.approx(r.rollout_s + r.old_s + r.update_s + r.shift_s)
        assert r.rollout_share == pytest.approx(r.rollout_s / r.step_s)
        assert r.gpu_hours == pytest.approx(r.step_s * 700 * 8 / 3600)
    ckpt = time_plan("llada8b-math", gpus=8, tflops=100.0, gradient_checkpointing=True).rows[0]
    assert ckpt.update_s == pytest.approx(naive.update_s * 8 / 6)  # the forward recomputed in backward
    d1 = time_plan("llada8b-math", objective="d1", gpus=8, tflops=100.0).rows[0]
    assert d1.update_s == pytest.approx(naive.update_s / 16) and d1.old_s == pytest.approx(naive.old_s / 16)
    one = time_plan("llada8b-math", gpus=1, tflops=100.0).rows[0]
    assert one.step_s == pytest.approx(8 * naive.step_s) and one.gpu_hours == pytest.approx(naive.gpu_hours)


def test_a_sampler_cache_cuts_rollout_flop_by_the_ratio_of_positions():
    from bgpo.diffusion import sampler_positions

    cfg = load_config("llada8b-math", ["rollout.cache=prefix", "rollout.horizon=64", "rollout.refresh=null"])
    rows = {r.label: r for r in time_plan(cfg, tflops=100.0).rows}
    assert list(rows) == ["none", "prefix", "dual", "prefix h=64"] and rows["prefix h=64"].config
    for label, cache, horizon in (("prefix", "prefix", None), ("dual", "dual", None), ("prefix h=64", "prefix", 64)):
        ratio = sampler_positions(512, 512, 256, 32, cache, horizon) / sampler_positions(512, 512, 256, 32)
        assert rows[label].rollout_s == pytest.approx(rows["none"].rollout_s * ratio, rel=1e-12)
        assert (rows[label].old_s, rows[label].update_s) == (rows["none"].old_s, rows["none"].update_s)
    assert rows["none"].positions / rows["prefix"].positions == pytest.approx(262_144 / 81_664)


def test_tflops_overrides_the_measured_rate_and_a_bad_one_is_a_one_line_error(capsys, tmp_path):
    from bgpo.cli import main

    measured = time_plan("llada8b-math")
    assert main(["plan", "--config", "llada8b-math", "--tflops", "250", "--json"]) == 0
    timed = json.loads(capsys.readouterr().out)["time"]
    assert (timed["tflops"], timed["source"]) == (250.0, "--tflops")
    assert timed["rows"][0]["rollout_s"] == pytest.approx(measured.rows[0].rollout_s * measured.tflops / 250)
    assert main(["plan", "--config", "llada8b-math", "--tflops", "250"]) == 0
    out = capsys.readouterr().out
    assert "250 TFLOP/s per GPU, effective, from --tflops" in out and "naive : prefix : dual = 1 : 0.312 : 0.092" in out
    for bad in ("0", "-5", "nan"):
        assert main(["plan", "--config", "llada8b-math", "--tflops", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "--tflops must be a positive number" in err and len(err.splitlines()) == 1
    with pytest.raises(BGPOError, match="pass --tflops"):  # no committed measurement: no invented default
        time_plan("llada8b-math", data=tmp_path)


def test_plan_without_a_measured_rate_still_prints_the_memory_plan(capsys, monkeypatch):
    from bgpo.cli import main

    monkeypatch.setattr("bgpo.plan.measured_throughput", lambda data=None: None)  # an install without book/data
    assert main(["plan", "--config", "llada8b-math"]) == 0
    out = capsys.readouterr().out
    assert "PEAK per GPU" in out and "time plan: no committed GPU measurement" in out and "TFLOP/s per GPU," not in out
    assert main(["plan", "--config", "llada8b-math", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["time"] is None


def test_measured_vs_planned_puts_the_h200_full_model_beside_the_plan():
    """The full LLaDA-8B shape on the H200 (one GPU, 8-bit states): BGPO flat in n_t, the ELBO objective not,
    and the planned peaks within 2% of the measured ones with the planned states added."""
    from bgpo.plan import measured_vs_planned

    rows = {(r["objective"], r["n_t"]): r for r in measured_vs_planned(H200 / "fullscale.json")}
    bgpo = [rows["bgpo", n]["activations_gb"] for n in (1, 4, 16)]
    assert max(bgpo) / min(bgpo) < 1.001 and rows["elbo", 16]["activations_gb"] > 13 * bgpo[0]
    for key in (("bgpo", 16), ("elbo", 16)):
        assert rows[key]["planned_peak_gb"] == pytest.approx(rows[key]["peak_with_states_gb"], rel=0.02)
    assert round(rows["bgpo", 16]["planned_peak_gb"], 1) == 51.6 and round(rows["bgpo", 16]["peak_with_states_gb"], 1) == 51.7
