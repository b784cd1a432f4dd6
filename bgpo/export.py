"""Export a checkpoint as a plain Hugging Face model directory: config.json, model.safetensors, tokenizer.

``bgpo export runs/x/checkpoints/step-0000040 out/`` writes a folder that
``LLaDAModelLM.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)`` open with no bgpo
training state (optimiser, RNG, data position are dropped): the form to share or to evaluate elsewhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bgpo.checkpoint import DTYPES, load_policy
from bgpo.errors import BGPOError


def export(checkpoint: str | Path, out: str | Path, dtype: str | None = None) -> Path:
    """Write ``checkpoint``'s weights and tokenizer to ``out`` as a Hugging Face model dir; return ``out``."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise BGPOError(f"{out} exists and is not empty; choose a new output directory")
    model, tokenizer, _ = load_policy(checkpoint, "cpu", dtype)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `bgpo train` checkpoint (run/checkpoints/step-N) or a run's final/ dir")
    parser.add_argument("out", help="new directory for the Hugging Face model")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="weight dtype written (default: the run's model.dtype)")


def main(args: argparse.Namespace) -> int:
    out = export(args.checkpoint, args.out, args.dtype)
    print(f"wrote {out} (LLaDAModelLM.from_pretrained / AutoTokenizer.from_pretrained)")
    return 0
