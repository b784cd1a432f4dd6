"""bgpo/optim.py: every optimiser builds from the config; on bf16 weights at the paper's lr 5e-7 the
stochastic-rounding ones keep the update (unbiased drift), plain AdamW loses it."""

from __future__ import annotations

import pytest
import torch

from bgpo.config import load_config
from bgpo.errors import BGPOError
from bgpo.optim import OPTIMIZERS, build_optimizer, state_bytes_per_param

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torchao's compile-cache notices


def _drift(name: str, steps: int = 8, lr: float = 5e-7) -> float:
    """Mean change of 2^22 bf16 weights, all 1.0, after ``steps`` AdamW steps with gradient 1.

    Adam's step is then exactly lr (m_hat / sqrt(v_hat) = 1), so the exact drift is -steps * lr = -4e-6,
    far below bf16's gap of 2^-8 under 1.0: round-to-nearest keeps 1.0, stochastic rounding moves a
    fraction ~1e-3 of the weights one gap down, 4e-6 on average (standard error ~1.5%).
    """
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(1 << 22, dtype=torch.bfloat16))
    cfg = load_config("tiny-countdown", [f"optim.name={name}", f"optim.lr={lr}", "optim.weight_decay=0"]).optim
    opt = build_optimizer([w], cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # the trainer's scheduler drives the lr
    for _ in range(steps):
        w.grad = torch.ones_like(w)
        opt.step()
        sched.step()
    return (w.double() - 1).mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamw-sr", "adamw8bit-sr"])
def test_a_5e7_step_moves_bf16_weights_by_lr_on_average(name):
    drift = _drift(name)
    assert drift == pytest.approx(-8 * 5e-7, rel=0.1), drift


def test_plain_adamw_would_lose_the_update_and_is_refused_on_bf16():
    w = torch.nn.Parameter(torch.ones(1024, dtype=torch.bfloat16))
    opt = torch.optim.AdamW([w], lr=5e-7, weight_decay=0.0)  # what plain AdamW does on bf16 weights
    for _ in range(8):
        w.grad = torch.ones_like(w)
        opt.step()
    assert torch.equal(w, torch.ones_like(w))  # every step rounded away
    cfg = load_config("tiny-countdown").optim
    assert cfg.name == "adamw"
    with pytest.raises(BGPOError, match="adamw8bit-sr"):
        build_optimizer([w], cfg)
    half = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    with pytest.raises(BGPOError, match="model.dtype=bfloat16"):
        build_optimizer([half], load_config("tiny-countdown", ["optim.name=adamw-sr"]).optim)


def test_config_validates_the_names():
    with pytest.raises(BGPOError, match="adamw, adamw-sr, adamw8bit-sr"):
        load_config("tiny-countdown", ["optim.name=adam"])
    with pytest.raises(BGPOError, match="float32, bfloat16, float16"):
        load_config("tiny-countdown", ["model.dtype=fp8"])
    with pytest.raises(BGPOError, match="varlen, flash-attn, sdpa"):
        load_config("tiny-countdown", ["model.packed_attention=flash_attention_2"])


def test_float32_adamw_is_torch_adamw_with_the_config_hyperparameters():
    w = torch.nn.Parameter(torch.zeros(3))
    cfg = load_config("tiny-countdown", ["optim.beta2=0.95", "optim.eps=1e-6"]).optim
    opt = build_optimizer([w], cfg)
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (cfg.lr, (0.9, 0.95), 1e-6, 0.0)


def test_state_bytes_per_param():
    assert [state_bytes_per_param(n, 2) for n in OPTIMIZERS] == [4, 4, pytest.approx(2.03, abs=0.01)]
    assert state_bytes_per_param("adamw", 4) == 8
