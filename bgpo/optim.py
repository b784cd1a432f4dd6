"""The optimiser of a run, built from the ``optim`` config section (``build_optimizer``).

BGPO's recipe trains LLaDA-8B with AdamW at lr 5e-7. With float32 weights (``model.dtype: float32``,
bf16 compute through ``trainer.mixed_precision``) plain AdamW is right. On ONE 80 GB GPU the weights
must be bf16 (16 GB instead of 32), and there plain AdamW fails silently: an Adam step moves a weight
by about ``lr`` (``m_hat / sqrt(v_hat)`` is of order 1), bf16 keeps 8 significant bits, so

    w_new = round_bf16(w - lr * u)  =  w     whenever  |lr * u| < |w| * 2^-9

and at lr 5e-7 that is every weight above ~2.6e-4 in size: training does nothing. The bf16 choices
here keep the update alive with *stochastic rounding* (round up with probability equal to the
remainder's fraction of the gap), which is unbiased, ``E[round_sr(x)] = x``, so many small steps add
up to the right drift, with no compensation buffer to store:

    adamw          torch.optim.AdamW; states in the weights' dtype (use float32 weights)
    adamw-sr       torchao ``_AdamW(bf16_stochastic_round=True)``: bf16 states, 2 + 2 bytes per weight
    adamw8bit-sr   torchao ``AdamW8bit(bf16_stochastic_round=True)``: blockwise 8-bit states,
                   1 + 1 bytes per weight (+ one fp32 scale per 256) — the one-GPU recipe

torchao (PyTorch's own architecture-optimisation library) is chosen over Kahan-summation optimisers
(e.g. torch-optimi) because Kahan summation stores a bf16 compensation buffer, +16 GB for 8B
weights, which together with bf16 states would not leave room for a rollout on one 80 GB GPU; and
over bitsandbytes' 8-bit AdamW because that one needs fp32 master weights (+32 GB) to keep small
updates. Its update runs through ``torch.compile`` (one compile per parameter shape: seconds on a
GPU, tens of seconds on a CPU).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from bgpo.errors import BGPOError

OPTIMIZERS = ("adamw", "adamw-sr", "adamw8bit-sr")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg) -> torch.optim.Optimizer:
    """The optimiser ``optim_cfg.name`` over ``params`` with the config's lr, betas, eps, weight decay.

    Refuses combinations that would not train: half-precision weights under plain AdamW (updates
    below 1/256 of a weight round away) and float16 weights under stochastic rounding (bf16 only).
    """
    params = list(params)
    name = optim_cfg.name
    if name not in OPTIMIZERS:
        raise BGPOError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    dtypes = {p.dtype for p in params}
    if name == "adamw" and dtypes & {torch.bfloat16, torch.float16}:
        raise BGPOError("optim.name=adamw on bf16/fp16 weights rounds updates of lr << 1/256 of a weight away; "
                        "set optim.name=adamw8bit-sr (or adamw-sr), or model.dtype=float32")
    if name != "adamw" and torch.float16 in dtypes:
        raise BGPOError(f"optim.name={name} rounds stochastically into bfloat16 only; set model.dtype=bfloat16")
    kwargs = dict(lr=optim_cfg.lr, betas=(optim_cfg.beta1, optim_cfg.beta2), eps=optim_cfg.eps,
                  weight_decay=optim_cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    from torchao.optim import AdamW8bit, _AdamW  # imported only when chosen: torchao is slow to import

    cls = AdamW8bit if name == "adamw8bit-sr" else _AdamW
    return cls(params, **kwargs, bf16_stochastic_round=True)


def state_bytes_per_param(name: str, weight_bytes: int) -> float:
    """Optimiser-state bytes per weight (the planner's term): two moments in the weights' dtype, or 8-bit."""
    if name not in OPTIMIZERS:
        raise BGPOError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    if name == "adamw8bit-sr":
        return 2 * (1 + 4 / 256)  # two 8-bit moments, one fp32 scale per block of 256
    return 2 * weight_bytes
