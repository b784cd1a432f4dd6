"""The rollout module's random-reward control: rewards permuted within groups, reproducibly."""

import torch

from bgpo.objectives import group_advantages
from bgpo.rollout import REWARDS, shuffled_rewards, stream


def test_shuffled_rewards_keep_each_groups_values_and_advantages_but_not_their_order():
    rewards = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.0, 0.0, 1.0, 1.0, 0.9, 0.1, 0.5, 0.5])
    out = shuffled_rewards(rewards, 4, stream(0, 3, 0, REWARDS))
    for g in range(4):
        assert sorted(out[4 * g:4 * g + 4].tolist()) == sorted(rewards[4 * g:4 * g + 4].tolist())
    assert sorted(group_advantages(out, 4).tolist()) == sorted(group_advantages(rewards, 4).tolist())
    assert not torch.equal(out, rewards)
    assert torch.equal(out, shuffled_rewards(rewards, 4, stream(0, 3, 0, REWARDS)))  # same stream, same shuffle
    assert not torch.equal(out, shuffled_rewards(rewards, 4, stream(0, 4, 0, REWARDS)))  # next step, new shuffle
