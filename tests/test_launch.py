"""bgpo launch: accelerate FSDP config + SLURM script + command, without running anything."""

import yaml

from bgpo.launch import launch
from bgpo.errors import BGPOError
import pytest


def test_accelerate_config_and_command(tmp_path):
    p = launch("llada8b-math", nodes=2, gpus_per_node=8, output_dir=tmp_path)
    cfg = yaml.safe_load(p.accelerate_config.read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 16 and cfg["num_machines"] == 2
    assert cfg["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LLaDABlock"
    assert cfg["mixed_precision"] == "bf16" and cfg["fsdp_config"]["fsdp_activation_checkpointing"] is False
    assert p.command[:2] == ["accelerate", "launch"] and "train" in p.command and p.sbatch_script is None


def test_slurm_script(tmp_path):
    p = launch("llada8b-sudoku", nodes=2, gpus_per_node=8, launcher="slurm", output_dir=tmp_path,
               overrides=["objective.n_t=64"])
    text = p.sbatch_script.read_text()
    assert "#SBATCH --nodes=2" in text and "--num_processes 16" in text and "--set objective.n_t=64" in text
    assert p.command == ["sbatch", str(p.sbatch_script)]


def test_rejects_a_batch_that_does_not_split_over_the_gpus(tmp_path):
    with pytest.raises(BGPOError, match="divisible"):
        launch("llada8b-math", nodes=3, gpus_per_node=1, output_dir=tmp_path)


def test_multi_node_accelerate_needs_node0_address(tmp_path, monkeypatch):
    from bgpo.launch import launch

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(BGPOError, match="--main-process-ip"):
        launch("llada8b-math", nodes=2, gpus_per_node=8, output_dir=tmp_path, dry_run=False)
    dry = launch("llada8b-math", nodes=2, gpus_per_node=8, output_dir=tmp_path)
    assert "NODE0_ADDRESS" in dry.accelerate_config.read_text()
    real = launch("llada8b-math", nodes=2, gpus_per_node=8, output_dir=tmp_path, main_process_ip="10.0.0.1")
    assert "main_process_ip: 10.0.0.1" in real.accelerate_config.read_text()


def test_printed_command_fits_a_page_and_pastes_into_a_shell(tmp_path, monkeypatch):
    import shlex

    from bgpo.launch import wrap_command

    monkeypatch.chdir(tmp_path)
    plan = launch("llada8b-math", nodes=1, gpus_per_node=8, output_dir="runs/launch",
                  overrides=["model.path=/models/LLaDA-8B-Instruct", "trainer.output_dir=runs/a-long-folder-name"])
    text = wrap_command(plan.command)
    assert all(len(line) <= 96 for line in text.splitlines()) and len(text.splitlines()) > 1
    assert shlex.split(text.replace("\\\n", " ")) == plan.command
    assert "--set model.path=/models/LLaDA-8B-Instruct" in text  # an option keeps its value on its line


def test_batch_split_error_says_what_the_batch_means_and_how_to_fix_it():
    from bgpo.launch import check_batch_split

    check_batch_split(16, 8, 8)
    with pytest.raises(BGPOError) as err:
        check_batch_split(16, 8, 32)
    message = str(err.value)
    assert "16 prompts x 8 = 128 rollouts" in message
    assert "raise prompts_per_step to 32" in message and "use 16 GPUs" in message
