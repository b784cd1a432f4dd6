"""``bgpo`` command line: one sub-command per job, each implemented in the module that owns it.

Every command module defines ``add_arguments(parser)`` and ``main(args) -> int``; modules are
imported lazily so ``bgpo --help`` stays fast. Bad input raises :class:`bgpo.errors.BGPOError`,
printed here as one line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("bgpo.train", "run RL (BGPO / ELBO / d1) from a YAML config, resumable"),
    "eval": ("bgpo.evaluate", "accuracy of a checkpoint on a task's test split"),
    "export": ("bgpo.export", "write a checkpoint as a plain Hugging Face model directory"),
    "generate": ("bgpo.generate", "sample completions for prompts with the LLaDA sampler"),
    "score": ("bgpo.score", "score files of generations with the task rewards"),
    "plan": ("bgpo.plan", "predict peak GPU memory of a config and the n_t that fits"),
    "launch": ("bgpo.launch", "write accelerate/SLURM configs for multi-GPU, multi-node runs"),
    "bench": ("bgpo.memory", "measure activation memory and time of one update vs n_t"),
    "sft": ("bgpo.sft", "masked-diffusion SFT warm start of a tiny LLaDA on a synthetic task"),
    "experiment": ("bgpo.experiment", "run the small-scale experiment grid of the book"),
    "cache-study": ("bgpo.cache_study", "does the sampler's KV cache change rollouts? drift, accuracy, ELBO, paired"),
    "variance": ("bgpo.estimator", "gradient noise vs n_t: mask vs rollout variance, SNR, cosine to a reference"),
    "figures": ("bgpo.figures", "redraw the book's figures from data files"),
    "doctor": ("bgpo.doctor", "is this machine ready? environment, kernels, memory, one 8B update, end to end"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its flags."""
    parser = argparse.ArgumentParser(
        prog="bgpo", description="Boundary-Guided Policy Optimization for diffusion LMs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bgpo.errors import BGPOError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except BGPOError as err:
        print(f"bgpo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgpo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
