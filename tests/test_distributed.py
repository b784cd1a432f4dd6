"""Several processes on one CPU (gloo): ``update`` synchronises gradients once per optimiser step and agrees
on a non-finite loss; the trainer runs under FSDP2 exactly as ``bgpo launch`` configures it (sharded
checkpoint, SIGKILL, resume, ``final/`` export) and ends where a 1-process run ends."""

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bgpo.checkpoint import latest_checkpoint, load_model
from bgpo.config import load_config
from bgpo.data import get_task
from bgpo.launch import launch
from bgpo.model import LLaDAModelLM
from bgpo.objectives import update
from bgpo.train import train
from dist_worker import MICRO, N_T, grads, problem
from fsdp_train import DenseReward
from test_train import _free_port, tiny

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of 2 gloo processes of dist_worker.py saved (one launch serves the tests below).

    The timeout is generous for 2 shared CPU cores (a run takes ~20 s alone); a rank left waiting in a
    collective fails the tests instead of hanging them."""
    out, port, timeout = tmp_path_factory.mktemp("ranks"), _free_port(), 300
    procs = []
    for rank in range(2):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(TESTS / "dist_worker.py"), str(out)], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + timeout
    try:
        errors = [p.communicate(timeout=max(1.0, deadline - time.time()))[1] for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank still runs after {timeout} s (waiting in a collective?)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_one_gradient_allreduce_per_update_and_the_one_process_gradient(ranks):
    """bgpo with n_t=4 and 2 micro-batches: 8 backwards per rank, ONE DDP all-reduce through the accelerator
    (8 without it: the count can fail), and the averaged gradient equals one process on the whole batch."""
    backwards = 2 * N_T  # 2 rows per rank / micro-batch 1, x n_t
    for r in ranks:
        assert r["accelerator"]["allreduces"] == 1
        assert r["plain"]["allreduces"] == backwards
    model, batch = problem()
    update("bgpo", model, batch, micro_batch_size=MICRO)
    reference = grads(model)
    assert max(g.abs().max().item() for g in reference.values()) > 1e-3  # a real gradient, not zeros
    for r in ranks:
        for path in ("accelerator", "plain"):
            got = r[path]["grads"]
            assert got.keys() == reference.keys()
            for name, g in reference.items():
                torch.testing.assert_close(got[name], g, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_both(ranks):
    """Only rank 1's loss is NaN (8 backwards); both ranks raise BGPOError, and both know how many were bad."""
    for r in ranks:
        assert r["nonfinite"] is not None and r["nonfinite"].startswith("bgpo loss is not finite on 8 backward(s)")


@contextlib.contextmanager
def _fsdp_train(cfg_file: Path, accel_cfg: Path, log: Path, resume: bool) -> Iterator[subprocess.Popen]:
    """`accelerate launch --config_file <bgpo launch's file>` of tests/fsdp_train.py on 2 CPU processes
    (output in ``log``); on leaving, whatever still runs is SIGKILLed: launcher and both ranks, as a crashed node."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accel_cfg),
           "--num_processes", "2", "--main_process_port", str(_free_port()),
           str(TESTS / "fsdp_train.py"), "train", "--config", str(cfg_file), *(["--resume"] if resume else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank it started; torchrun starts each rank in a session of its own,
    so killing the launcher (or its process group) would leave the ranks training on."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        _, alive = psutil.wait_procs(tree, timeout=60)
        assert not alive, f"still running after SIGKILL: {alive}"
    proc.wait()


@pytest.mark.slow
def test_fsdp2_run_is_killed_resumed_and_exports_the_one_process_weights(tmp_path, monkeypatch):
    """`bgpo launch`'s FSDP2 config on 2 CPU processes: sharded checkpoints, SIGKILL after the first, --resume
    to the end; final/ loads with from_pretrained and holds a 1-process run's weights, and every sharded
    step-N loads in one process."""
    steps = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 8}
    raw = tiny(tmp_path / "fsdp", trainer=steps)
    cfg_file = tmp_path / "fsdp.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    plan = launch(cfg_file, nodes=1, gpus_per_node=2, output_dir=tmp_path / "launch")
    accel = yaml.safe_load(plan.accelerate_config.read_text())
    assert accel["distributed_type"] == "FSDP" and accel["fsdp_config"]["fsdp_version"] == 2
    run = Path(raw["trainer"]["output_dir"])

    log = tmp_path / "first.log"
    with _fsdp_train(cfg_file, plan.accelerate_config, log, resume=False) as proc:
        deadline = time.time() + 300
        while latest_checkpoint(run) is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
    assert not (run / "final").exists(), "the run ended before the kill: the test would prove nothing"
    killed_at = latest_checkpoint(run)
    assert (killed_at / "pytorch_model_fsdp_0" / ".metadata").is_file()  # sharded (DCP), not one safetensors
    assert len(list((killed_at / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2

    log = tmp_path / "resumed.log"
    with _fsdp_train(cfg_file, plan.accelerate_config, log, resume=True) as proc:
        monkeypatch.setattr("bgpo.train.get_task", lambda data_cfg: DenseReward(get_task(data_cfg)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the reference, while the resume runs: one core each, no oversubscription
        try:
            one = train(load_config(tiny(tmp_path / "one", trainer=steps)))
        finally:
            torch.set_num_threads(threads)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    exported = LLaDAModelLM.from_pretrained(run / "final").state_dict()
    reference = load_file(str(one / "final" / "model.safetensors"))
    assert exported.keys() == reference.keys()
    # float32 sums in another order; Adam divides tiny gradients by their own size, so a few weights move
    # by up to ~4e-5 — a resume that lost the optimiser state or a step would be off by ~lr = 1e-2
    for name, w in reference.items():
        torch.testing.assert_close(exported[name], w, rtol=1e-4, atol=1e-4,
                                   msg=lambda m, name=name: f"{name}, resumed from {killed_at.name}: {m}")
    last = load_model(latest_checkpoint(run)).state_dict()  # a sharded step-N read by one process
    assert latest_checkpoint(run).name == "step-0000006"
    assert all(torch.equal(last[k], exported[k]) for k in exported)
    first = load_model(run / "checkpoints" / "step-0000002").state_dict()
    assert max((first[k] - exported[k]).abs().max().item() for k in exported) > 1e-2  # 4 more steps moved it
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows_one = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for r, r1 in zip(rows, rows_one, strict=True):
        assert r["reward_mean"] == pytest.approx(r1["reward_mean"], rel=1e-6) and r["sequences"] == 4
        assert r["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)
        assert (r["grad_norm"] > 0) == (r["zero_adv_groups"] < 1)  # a gradient whenever a group has a signal
