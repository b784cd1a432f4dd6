"""Rollouts: G sampled completions per prompt and their rewards — nothing about objectives.

Every random draw of a step comes from a generator that is a pure function of
``(seed, step, prompt, stream)`` (:func:`stream`): the sampler of prompt group ``p`` at step ``s``
uses stream :data:`SAMPLER`, the Monte Carlo masks of the objective use :data:`MASKS`, the
random-reward control :data:`REWARDS`. So a resumed
run repeats an uninterrupted one bit for bit, N processes that each take ``prompts_per_step / N``
prompts do the same work as one process, and changing a sampler setting never changes the masks.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from bgpo.data import encode_prompts
from bgpo.diffusion import SamplerStats, device_generator, generate
from bgpo.sandbox import IsolationUnavailable

SAMPLER, MASKS, REWARDS = 0, 1, 2  # the random streams of a step


def stream(seed: int, step: int, prompt: int, which: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one (seed, step, prompt, stream) on ``device``: drawing there avoids host copies."""
    key = (((seed * 1_000_003 + step) * 1_000_033 + prompt) * 4 + which) % 2**63  # any trainer seed fits
    return device_generator(key, device)


def safe_rewards(task, completions: list[str], examples: list[dict], log: Path | None) -> list[float]:
    """Per-completion rewards; a reward that raises scores 0 and is logged (the run goes on).

    The batch goes through ``task.rewards`` first (the code task runs its programs concurrently);
    only if that raises is it scored one completion at a time, so just the failing ones get 0.
    """
    try:
        return [float(r) for r in task.rewards(completions, examples)]
    except IsolationUnavailable:  # the machine, not a completion: refuse loudly, never a silent 0.0
        raise
    except Exception:  # some completion's reward raised: find it below
        pass
    out = []
    for completion, example in zip(completions, examples):
        try:
            out.append(float(task.reward(completion, example)))
        except Exception as err:  # untrusted model output must never kill a run
            out.append(0.0)
            if log is not None:
                with log.open("a") as f:
                    f.write(json.dumps({"error": repr(err), "completion": completion,
                                        "traceback": traceback.format_exc(limit=3)}) + "\n")
    return out


def shuffled_rewards(rewards: torch.Tensor, group_size: int, generator: torch.Generator) -> torch.Tensor:
    """The random-reward control: each group's rewards permuted at random among its rollouts.

    Every group keeps its reward values, so the advantages keep their distribution (same magnitudes,
    same zero-advantage groups) and the update its size; only the link between a completion and its
    reward is cut. What such a run learns is what update noise alone does to the policy.
    """
    r = rewards.view(-1, group_size)  # (prompts, G)
    order = torch.rand(r.shape, generator=generator, device=generator.device).argsort(1)  # (prompts, G)
    return r.gather(1, order.to(r.device)).reshape(-1)


@dataclass
class Rollouts:
    """G rollouts per prompt with their rewards (the G rollouts of one prompt are contiguous)."""

    input_ids: torch.Tensor  # (N, P + L)
    attention_mask: torch.Tensor  # (N, P + L)
    response_mask: torch.Tensor  # (N, P + L) bool: the whole response, trailing EOS included
    completions: list[str]
    examples: list[dict]
    rewards: torch.Tensor  # (N,)
    positions: int = 0  # token positions the sampler ran through the model (SamplerStats.positions)


def rollout(model, tokenizer, task, examples: list[dict], rollout_cfg, *, seed: int, step: int,
            first_prompt: int, device: torch.device, reward_log: Path | None = None) -> Rollouts:
    """Sample ``group_size`` completions per prompt (sampler calls of whole groups) and score them.

    ``first_prompt`` is the global index of ``examples[0]`` in the step's prompts: each sampler call
    draws from the :data:`SAMPLER` stream of its first prompt, so the result does not depend on how
    prompts are split over processes. With ``sort_by_length`` the calls are made of prompts sorted by
    token length (their stream is that of the call's first prompt in sorted order), so a call pads to
    its own longest prompt only; the rollouts come back in the examples' order. This changes which
    prompts share a call, hence the noise each rollout draws, not the distribution of any rollout.
    """
    r, G = rollout_cfg, rollout_cfg.group_size
    per_call = max(1, (r.batch_size or len(examples) * G) // G)  # prompts per sampler call
    order = list(range(len(examples)))
    if r.sort_by_length and per_call < len(examples):
        lengths = encode_prompts(tokenizer, task, examples, r.max_prompt_length)[1].sum(-1).tolist()
        order.sort(key=lambda i: lengths[i])
    stats = SamplerStats()
    ids, att, comps, rows = [], [], [], []
    for start in range(0, len(examples), per_call):
        chunk = [examples[i] for i in order[start:start + per_call]]
        p_ids, p_mask = encode_prompts(tokenizer, task, chunk, r.max_prompt_length)
        p_ids, p_mask = p_ids.repeat_interleave(G, 0).to(device), p_mask.repeat_interleave(G, 0).to(device)
        x = generate(model, p_ids, p_mask, gen_length=r.gen_length, steps=r.steps, block_length=r.block_length,
                     temperature=r.temperature, remasking=r.remasking, cache=r.cache, horizon=r.horizon,
                     refresh=r.refresh, eos_exit=r.eos_exit, stats=stats,
                     generator=stream(seed, step, first_prompt + start, SAMPLER, device))  # (b*G, P + L)
        P = p_ids.shape[1]
        comps += tokenizer.batch_decode(x[:, P:].cpu(), skip_special_tokens=True)
        rows += [e for e in chunk for _ in range(G)]
        ids.append(x)
        att.append(torch.cat([p_mask, torch.ones_like(x[:, P:])], 1))
    width = max(t.shape[1] for t in ids)  # calls may have different prompt widths: left-pad to one
    input_ids = torch.cat([_left_pad(t, width, tokenizer.pad_token_id) for t in ids])
    attention_mask = torch.cat([_left_pad(t, width, 0) for t in att])
    if order != sorted(order):  # back to the examples' order, groups kept whole
        where = sorted(range(len(order)), key=order.__getitem__)  # where[i]: example i's place in the calls
        back = [G * where[i] + g for i in range(len(examples)) for g in range(G)]
        index = torch.tensor(back, device=input_ids.device)
        input_ids, attention_mask = input_ids[index], attention_mask[index]
        comps, rows = [comps[j] for j in back], [rows[j] for j in back]
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    response_mask[:, width - r.gen_length:] = True
    rewards = torch.tensor(safe_rewards(task, comps, rows, reward_log), dtype=torch.float32, device=device)
    return Rollouts(input_ids, attention_mask, response_mask, comps, rows, rewards, stats.positions)


def _left_pad(t: torch.Tensor, width: int, value) -> torch.Tensor:
    if t.shape[-1] == width:
        return t
    pad = torch.full((*t.shape[:-1], width - t.shape[-1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], -1)
