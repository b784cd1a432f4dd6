"""``bgpo doctor`` at CPU size (what CI runs): real numbers from every check that a CPU can judge, GPU-only
criteria said as such, a failing or slow check never hiding the next, the budget kept, bad flags refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bgpo import doctor
from bgpo.cli import main as cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One CPU-size run of ``bgpo doctor --out`` through the CLI (its JSON and what it printed)."""
    tmp = tmp_path_factory.mktemp("doctor")
    out = tmp / "report.json"
    code = cli(["doctor", "--out", str(out), "--work-dir", str(tmp / "work")])
    data = json.loads(out.read_text())
    data["exit_code"] = code
    return data


def _rows(report: dict, check: str) -> dict[str, dict]:
    return {r["criterion"]: r for r in report["summary"] if r["check"] == check}


def _check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_every_check_runs_in_order_and_nothing_fails_at_cpu_size(report):
    assert [c["name"] for c in report["checks"]] == [name for name, _ in doctor.CHECKS]
    assert report["exit_code"] == 0 and report["failed"] == []
    assert report["kind"] == "cpu" and report["seconds"] <= report["budget_s"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["real weights"] == doctor.SKIPPED and statuses["FSDP2"] == doctor.NEEDS_GPU
    for c in report["checks"]:
        assert c["seconds"] <= c["budget_s"] + 1.0


def test_packed_and_padded_attention_agree_on_cpu(report):
    f = _check(report, "packed attention")["figures"]
    assert f["kernel"] == "sdpa" and 0.5 < f["real_fraction"] < 0.9 and f["masked"] > 0
    assert f["max_abs_logp_diff"] <= 1e-4 and f["max_rel_grad_diff"] <= 1e-4
    assert f["packed_tokens_per_s"] > 0 and f["padded_tokens_per_s"] > 0
    assert _rows(report, "packed attention")["max |log p| packed - padded (float32)"]["status"] == doctor.PASS
    speed = next(r for k, r in _rows(report, "packed attention").items() if k.startswith("packed / padded speed"))
    ideal = 1 / f["real_fraction"]
    assert speed["status"] == doctor.INFO and f"of the ideal {ideal:.2f}x" in speed["measured"]
    assert speed["threshold"] == f"on a GPU: >= 85% of 1/{f['real_fraction']:.2f} = {0.85 * ideal:.2f}x"


def test_packed_speed_is_judged_against_the_ideal_of_the_real_fraction():
    """The H200's figures (book/data/gpu-h200/doctor.json): 1.29x at 72% real tokens is 93% of the ideal 1.39x,
    a pass, where the old fixed 1.3x bar failed it; 1.10x there is 79% of the ideal, a fail."""
    f = _check(json.loads((REPO / "book" / "data" / "gpu-h200" / "doctor.json").read_text()),
               "packed attention")["figures"]
    criterion, ok, measured, threshold = doctor.packed_speed_row(f["speedup"], f["real_fraction"],
                                                                 f["packed_tokens_per_s"], f["padded_tokens_per_s"])
    assert ok and criterion == "packed / padded speed at 72% real tokens"
    assert measured == "1.29x = 93% of the ideal 1.39x (74,094 vs 57,348 tok/s)"
    assert threshold == ">= 85% of 1/0.72 = 1.18x"
    assert doctor.packed_speed_row(1.10, 0.72, 1.0, 1.0)[1:3] == (False, "1.10x = 79% of the ideal 1.39x (1 vs 1 tok/s)")


def test_the_book_shows_the_committed_report_as_recorded_and_todays_verdict_beside_it():
    """The H200 report says fail under the bar it was written with; the note under its table says today's bar
    passes the same figures, and a report whose verdict still holds gets no note."""
    from bgpo.book import rejudged_packed_speed

    report = json.loads((REPO / "book" / "data" / "gpu-h200" / "doctor.json").read_text())
    note = rejudged_packed_speed(report)
    assert "bar for the packed / padded speed at 72% real tokens was >= 1.3x" in note
    assert "**pass**: 1.29x = 93% of the ideal 1.39x" in note
    row = next(r for r in _check(report, "packed attention")["rows"] if r["criterion"].startswith("packed / padded"))
    row["status"] = "pass"
    assert rejudged_packed_speed(report) == ""
    assert rejudged_packed_speed({"kind": "cpu", "checks": report["checks"]}) == ""  # CPU speeds are information


def test_free_disk_says_what_it_is_for_and_the_setting_that_lowers_it():
    """The H200 had 69 GB for a 97 GB need: the row says it is 3 checkpoints of 32.3 GB and that
    keep_checkpoints=1 needs 65 GB (it would fit there)."""
    keep, per_gb = doctor._run_checkpoints()
    assert keep == 2 and per_gb == pytest.approx(32.3, abs=0.1)
    criterion, ok, measured, threshold = doctor.disk_row(68.6, per_gb, keep)
    assert not ok and measured == "69 GB"
    assert criterion == "free disk for 3 checkpoints of llada8b-math-1gpu (weights + optimiser states)"
    assert threshold == (">= 97 GB = (2 kept + 1 being written) x 32.3 GB (trainer.keep_checkpoints=2; "
                         "trainer.keep_checkpoints=1 needs 65 GB)")
    assert doctor.disk_row(68.6, per_gb, 1)[1:4] == (True, "69 GB", ">= 65 GB = (1 kept + 1 being written) x 32.3 GB "
                                                                   "(trainer.keep_checkpoints=1)")


def test_a_cpu_report_never_says_needs_a_gpu_next_to_a_number(report):
    """A CPU's figures are information: a row that says "needs a GPU" has nothing measured in it."""
    needs = [r for r in report["summary"] if r["status"] == doctor.NEEDS_GPU]
    assert needs and all(not any(ch.isdigit() for ch in r["measured"]) for r in needs), needs
    info = {r["criterion"].split(" at ")[0] for r in report["summary"] if r["status"] == doctor.INFO
            and r["threshold"].startswith("on a GPU: ")}
    assert {"device-generator tokens/s", "packed / padded speed"} <= info


def test_sampler_speed_needs_a_gpu_but_the_seed_repeats(report):
    rows = _rows(report, "sampler")
    assert rows["device-generator tokens/s"]["status"] == doctor.INFO  # a CPU's tokens/s: information
    assert rows["device-generator tokens/s"]["threshold"].startswith("on a GPU: >= 1,215")  # 15 x 81 tokens/s
    assert rows["same seed, same tokens (device generator)"]["status"] == doctor.PASS
    figures = _check(report, "sampler")["figures"]
    runs = figures["runs"]
    assert [(r["generator"], r["cache"]) for r in runs] == [("device", "none"), ("device", "prefix"),
                                                             ("device", "dual"), ("cpu", "none")]
    assert all(r["tokens_per_s"] > 0 for r in runs) and figures["device_over_cpu"] > 0


def test_sampler_reports_every_cache_mode_and_refresh_1_is_exact(report):
    from bgpo.diffusion import sampler_positions

    rows = _rows(report, "sampler")
    s = doctor.SIZES["cpu"].sampler
    caches = _check(report, "sampler")["figures"]["caches"]
    assert list(caches) == ["none", "prefix", "dual"]
    for mode, figures in caches.items():
        positions = sampler_positions(s["prompt_len"], s["gen_length"], s["steps"], s["block_length"], mode)
        assert figures["positions_per_token"] == pytest.approx(positions / s["gen_length"])
        assert figures["tokens_per_s"] > 0 and figures["speedup"] > 0
        row = rows[f"cache {mode}: tokens/s, positions/token, speed-up vs none"]
        assert row["status"] == doctor.INFO and "tok/s" in row["measured"]
    assert (caches["none"]["speedup"], caches["none"]["positions_ratio"]) == (1.0, 1.0)
    assert caches["dual"]["positions_ratio"] <= caches["prefix"]["positions_ratio"] < 1  # equal with one block
    for mode in ("prefix", "dual"):
        assert rows[f"cache {mode}, refresh=1: the exact sampler's tokens (same seed)"]["status"] == doctor.PASS
    assert _check(report, "sampler")["figures"]["refresh1_identical"] == {"prefix": True, "dual": True}


def test_a_cached_sampler_that_drifts_fails_the_refresh_1_criterion(monkeypatch, tmp_path):
    """The criterion can fail: a cached path that changes one token is caught (tiny model, CPU)."""
    from bgpo import diffusion

    real = diffusion.generate

    def drifting(*args, cache="none", **kw):
        out = real(*args, cache=cache, **kw)
        if cache != "none":
            out[0, -1] += 1
        return out

    monkeypatch.setattr(diffusion, "generate", drifting)
    c = doctor.run_check("sampler", doctor.sampler, doctor.Context(doctor.SIZES["cpu"], tmp_path, None, 0), 30)
    rows = {r.criterion: r for r in c.rows}
    assert c.status == doctor.FAIL
    assert rows["cache dual, refresh=1: the exact sampler's tokens (same seed)"].measured == "1 tokens differ"
    assert rows["same seed, same tokens (device generator)"].status == doctor.PASS


def test_committed_reports_without_cache_figures_still_load():
    """Reports written before the cache rows (book/data/*/doctor.json) frame as before: the schema only grew."""
    for path in sorted((REPO / "book" / "data").glob("*/doctor.json")):
        report = json.loads(path.read_text())
        assert len(doctor.summary_frame(report)) == len(report["summary"]) > 0


def test_memory_is_flat_for_bgpo_linear_for_elbo_and_planned(report):
    records = {(r["objective"], r["n_t"]): r for r in _check(report, "memory vs n_t")["figures"]["records"]}
    assert records["bgpo", 4]["memory_ratio"] <= 1.05 and records["elbo", 4]["memory_ratio"] >= 3.0
    for r in records.values():
        assert r["planned_activation_bytes"] == pytest.approx(r["activation_bytes"], rel=0.02)


def test_one_update_moves_weights_by_lr_and_its_checkpoint_reloads_bit_for_bit(report):
    f = _check(report, "one update")["figures"]
    assert 0.9 <= f["moved_over_lr"] <= 1.1  # float32 AdamW, first step: lr per weight
    assert f["differing"] == [] and f["optimizer_tensors"] > 0 and f["checkpoint_gb"] > 0
    rows = _rows(report, "one update")
    assert rows["checkpoint reload bit-identical (weights + optimiser)"]["status"] == doctor.PASS
    assert rows["peak memory vs bgpo plan"]["status"] == doctor.NEEDS_GPU
    # the first step (torchao compiles there) and a second, steady one are timed apart
    assert f["optimizer_step_s"] > 0 and f["optimizer_steady_step_s"] > 0
    assert rows["update + optimiser step time (second step)"]["measured"] == (
        f"{f['update_s']:.2f} s + {f['optimizer_steady_step_s']:.2f} s")
    first = rows["first optimiser step (compilation, once per run)"]
    assert first["status"] == doctor.INFO and first["measured"] == f"{f['optimizer_step_s']:.2f} s"


def test_tiny_run_is_killed_resumed_evaluated_and_sampled(report):
    c = _check(report, "end to end")
    assert c["status"] == doctor.PASS and c["figures"]["killed_at"] == "step-0000001"
    assert c["figures"]["eval"]["n"] == 4 and len(c["figures"]["completions"]) == 2


def test_the_summary_is_printed_and_framed(report):
    table = doctor.format_summary(report)
    assert table.splitlines()[0].split() == ["check", "criterion", "status", "measured", "threshold"]
    frame = doctor.summary_frame(report)
    assert list(frame.columns) == ["check", "criterion", "status", "measured", "threshold"]
    assert len(frame) == len(report["summary"]) and (frame["status"] == doctor.PASS).sum() >= 10


def test_gpu_budgets_stay_under_eight_minutes_on_one_gpu():
    assert doctor.budget_sum("cuda") < 8 * 60
    assert set(doctor.SIZES["cuda"].budgets) == set(doctor.SIZES["cpu"].budgets) == {n for n, _ in doctor.CHECKS}


def test_the_sampler_bar_is_the_h100_cpu_generator_figure():
    rows = json.loads((REPO / "book" / "data" / "gpu-h100" / "sampler.json").read_text())
    assert doctor.H100_CPU_GENERATOR_TOKENS_S == max(r["tokens_per_s"] for r in rows if r["generator"] == "cpu")


def _fake_checks(monkeypatch, checks, budgets):
    monkeypatch.setattr(doctor, "CHECKS", checks)
    monkeypatch.setattr(doctor, "SIZES", {"cpu": doctor.Sizes(**{**doctor.SIZES["cpu"].__dict__, "budgets": budgets})})
    monkeypatch.setattr(doctor, "budget_sum", lambda *a, **k: float(sum(budgets.values())))


def _boom(c, ctx):
    raise RuntimeError("broken on purpose")


def _slow(c, ctx):
    time.sleep(30)


def _fine(c, ctx):
    c.judge("works", True, "1", "1")


def test_a_failing_or_slow_check_does_not_hide_the_next(monkeypatch, tmp_path):
    _fake_checks(monkeypatch, [("boom", _boom), ("slow", _slow), ("fine", _fine)], {"boom": 5, "slow": 0.5, "fine": 5})
    start = time.perf_counter()
    report = doctor.run_doctor(work_dir=tmp_path, progress=None)
    assert time.perf_counter() - start < 5
    by = {c["name"]: c for c in report["checks"]}
    assert by["boom"]["status"] == doctor.ERROR and "broken on purpose" in by["boom"]["error"]
    assert by["slow"]["status"] == doctor.TIMEOUT and by["slow"]["seconds"] < 2
    assert by["fine"]["status"] == doctor.PASS
    assert report["failed"] == ["boom", "slow"]


def test_the_total_budget_is_respected(monkeypatch, tmp_path):
    _fake_checks(monkeypatch, [("a", _slow), ("b", _slow), ("c", _fine)], {"a": 60, "b": 60, "c": 60})
    start = time.perf_counter()
    report = doctor.run_doctor(budget_s=1.5, work_dir=tmp_path, progress=None)
    assert time.perf_counter() - start < 3
    by = {c["name"]: c for c in report["checks"]}
    assert by["a"]["status"] == doctor.TIMEOUT and by["a"]["budget_s"] == 1.5
    assert by["b"]["status"] == doctor.SKIPPED and by["c"]["status"] == doctor.SKIPPED


@pytest.mark.parametrize("argv, message", [
    (["--budget-s", "0"], "--budget-s must be > 0"),
    (["--model-path", "/nonexistent"], "holds no config.json"),
    (["--gpu"], "--gpu needs a CUDA GPU"),
])
def test_bad_flags_give_one_line_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli(["doctor", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_newest_report_prefers_a_gpu_report_and_says_where_it_came_from(tmp_path):
    data = tmp_path / "book" / "data"
    for folder, started, kind in (("cpu-doctor", "2026-12-02T10:00:00+00:00", "cpu"),
                                  ("gpu-h100", "2026-11-25T10:00:00+00:00", "cuda"),
                                  ("gpu-h200", "2026-12-01T10:00:00+00:00", "cuda")):
        (data / folder).mkdir(parents=True)
        (data / folder / "doctor.json").write_text(json.dumps({"started": started, "kind": kind, "device": folder,
                                                               "summary": []}))
        (data / folder / "README.md").write_text(f"# {folder} report\n")
    newest = doctor.newest_report(tmp_path)
    assert newest["provenance"] == {"path": "gpu-h200/doctor.json", "readme": "gpu-h200 report", "device": "gpu-h200",
                                    "kind": "cuda", "date": "2026-12-01"}
    for gpu in ("gpu-h100", "gpu-h200"):
        (data / gpu / "doctor.json").unlink()
    assert doctor.newest_report(data)["provenance"]["path"] == "cpu-doctor/doctor.json"


def test_the_committed_cpu_report_loads():
    report = doctor.newest_report(REPO)
    assert report["provenance"]["kind"] in ("cpu", "cuda") and len(doctor.summary_frame(report)) > 0


def test_real_weights_check_runs_on_a_small_local_model(tmp_path):
    """Check 7's path (load a model directory, its tokenizer, greedy GSM8K prompts, the math scorer) on a tiny
    model: it runs and scores, and only an 8B model is held to the answers."""
    from bgpo.model import init_model, preset_config
    from bgpo.tokenizer import build_tokenizer

    model_dir = tmp_path / "tiny-model"
    init_model(preset_config("tiny")).save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    ctx = doctor.Context(doctor.SIZES["cpu"], tmp_path, model_dir, 0)
    c = doctor.run_check("real weights", doctor.real_weights, ctx, 60)
    assert c.status == doctor.PASS, c.error
    rows = {r.criterion: r for r in c.rows}
    assert rows["weights load"].status == doctor.PASS
    assert rows["greedy GSM8K answers (d1 parser)"].status == doctor.INFO  # a tiny model is not held to answers
    assert len(c.figures["completions"]) == 4 and set(c.figures["metrics"]) == {"boxed_equiv", "d1_accuracy"}
