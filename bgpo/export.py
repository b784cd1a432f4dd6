"""Export a checkpoint as a plain Hugging Face model directory: config.json, model.safetensors, tokenizer.

``bgpo export runs/x/checkpoints/step-0000040 out/`` writes a folder that
``LLaDAModelLM.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)`` open with no bgpo
training state (optimiser, RNG, data position are dropped): the form to share or to evaluate elsewhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bgpo.errors import BGPOError


def load_tokenizer(checkpoint: Path):
    """The checkpoint's saved tokenizer, else the one its run config names (character tokenizer for presets)."""
    from bgpo.evaluate import _run_config
    from bgpo.train import build_tokenizer

    if (checkpoint / "tokenizer.json").is_file() or (checkpoint / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(checkpoint)
        tok.padding_side = "left"
        return tok
    cfg = _run_config(checkpoint)
    if cfg is None:
        raise BGPOError(f"{checkpoint} has no tokenizer files and no config.yaml to rebuild one from")
    return build_tokenizer(cfg.model)


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint``'s weights and tokenizer to ``out`` as a Hugging Face model dir; return ``out``."""
    from bgpo.train import load_model

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise BGPOError(f"{out} exists and is not empty; choose a new output directory")
    model = load_model(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `bgpo train` checkpoint (run/checkpoints/step-N) or a run's final/ dir")
    parser.add_argument("out", help="new directory for the Hugging Face model")


def main(args: argparse.Namespace) -> int:
    out = export(args.checkpoint, args.out)
    print(f"wrote {out} (LLaDAModelLM.from_pretrained / AutoTokenizer.from_pretrained)")
    return 0
