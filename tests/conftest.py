"""Shared fixtures: tiny LLaDA models and rollout-shaped batches, deterministic and fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0, **overrides):
    from bgpo.model import LLaDAModelLM, preset_config

    torch.manual_seed(seed)
    return LLaDAModelLM(preset_config("tiny", **overrides)).to(dtype)


def rollout_tensors(batch: int = 4, prompt_len: int = 6, gen_len: int = 10, seed: int = 0, pad: bool = True):
    """Left-padded prompts + responses: (input_ids, attention_mask, response_mask), ids avoid specials."""
    from bgpo.model import preset_config

    cfg = preset_config("tiny")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, cfg.vocab_size, (batch, prompt_len + gen_len), generator=g)
    attention = torch.ones_like(ids)
    if pad:
        for b in range(batch):
            n_pad = b % 3
            ids[b, :n_pad] = cfg.pad_token_id
            attention[b, :n_pad] = 0
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, prompt_len:] = True
    return ids, attention, response


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (it only exists in the development workspace)")
    return SHARED
