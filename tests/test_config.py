"""Config loading: presets, --set overrides, and one-line errors for unknown keys and bad values."""

import pytest

from bgpo.config import PRESET_DIR, describe, load_config
from bgpo.errors import BGPOError

PRESETS = ["tiny-countdown", "tiny-sudoku", "llada8b-math", "llada8b-code", "llada8b-countdown", "llada8b-sudoku"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_by_name_and_path(name):
    by_name = load_config(name)
    by_path = load_config(PRESET_DIR / f"{name}.yaml")
    assert by_name == by_path


def test_llada8b_presets_carry_the_papers_settings():
    # the paper's settings (book/data/paper_settings.csv): (steps, prompt len, response len, train diffusion steps, n_t)
    expected = {"math": (700, 512, 512, 256, 16), "code": (560, 1024, 512, 512, 16),
                "countdown": (560, 512, 256, 128, 16), "sudoku": (400, 512, 256, 128, 32)}
    for task, (steps, plen, glen, dsteps, n_t) in expected.items():
        c = load_config(f"llada8b-{task}")
        assert (c.trainer.steps, c.rollout.max_prompt_length, c.rollout.gen_length, c.rollout.steps,
                c.objective.n_t) == (steps, plen, glen, dsteps, n_t)
        assert (c.optim.lr, c.optim.weight_decay, c.optim.grad_clip) == (5e-7, 0.01, 1.0)
        assert (c.rollout.prompts_per_step, c.rollout.group_size, c.rollout.block_length) == (16, 8, 32)
        assert c.rollout.temperature == 0.6 and c.objective.name == "bgpo" and c.objective.ppo_epochs == 1
        assert c.trainer.mixed_precision == "bf16" and c.data.task == task


def test_set_overrides_are_typed_and_validated():
    c = load_config("tiny-countdown", ["objective.n_t=32", "optim.lr=5e-7", "objective.name=elbo",
                                       "model.init_from=runs/sft/final", "trainer.eval_limit=null"])
    assert c.objective.n_t == 32 and c.objective.name == "elbo"
    assert c.optim.lr == 5e-7 and isinstance(c.optim.lr, float)  # YAML reads 5e-7 as a string
    assert c.model.init_from == "runs/sft/final" and c.trainer.eval_limit is None


@pytest.mark.parametrize("override, message", [
    ("objective.nt=4", "did you mean 'n_t'"),
    ("rollot.n_t=4", "did you mean 'rollout'"),
    ("objective.n_t=0", "objective.n_t must be in [1, 4096]"),
    ("objective.name=grpo", "objective.name must be one of bgpo, elbo, d1"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("rollout.group_size=1", "rollout.group_size must be in [2, 1024]"),
    ("rollout.gen_length=33", "multiple of rollout.block_length"),
    ("rollout.steps=7", "multiple of the number of blocks"),
    ("model.gradient_checkpointing=3", "must be true or false"),
    ("objective.n_t", "section.field=value"),
])
def test_bad_config_names_the_field_and_the_fix(override, message):
    with pytest.raises(BGPOError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config("llada8b-math", [override])


def test_unknown_preset_suggests_the_closest(tmp_path):
    with pytest.raises(BGPOError, match="did you mean 'tiny-countdown'"):
        load_config("tiny-countdwn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  stepz: 3\n")
    with pytest.raises(BGPOError, match="trainer.stepz.*did you mean 'steps'"):
        load_config(bad)


def test_yaml_round_trip_and_reference():
    c = load_config("llada8b-sudoku", ["objective.n_t=8"])
    assert load_config(__import__("yaml").safe_load(c.to_yaml())) == c
    text = describe()
    assert "n_t = 16 [1, 4096]" in text and "name = 'bgpo' {bgpo|elbo|d1}" in text
