"""``bgpo score``: score files of generations with the task rewards.

Reads two formats and groups the results by *setup* (one run's files):

* our JSONL: one generation per line, ``{"task": ..., "prompt": ..., "completion": ...,
  <example fields>}`` (``task`` may instead come from ``--task``); setup = the file's stem;
* d1's JSON: ``{"generations": [{"question", "generations", "ground_truth"}, ...]}``, one
  file per shard named ``<setup>_<shard>_generations.json``; the task follows from the name
  (``gsm8k``/``math500`` -> math, ``countdown``, ``sudoku``, ``humaneval``/``mbpp`` -> code).

For each setup it prints the task's named metrics (``Task.metrics``: math ``boxed_equiv`` and
``d1_accuracy``; code ``pass@1``; countdown ``d1_success``, ``mean_reward``, ``strict_success``;
sudoku ``cell_accuracy``, ``d1_cell_accuracy``, ``solved``) in percent; ``--json PATH`` writes
them as fractions, ``{"results": [{"setup", "task", "n", ..., "primary_metric", "metrics":
{name: value}}]}``. ``d1_*`` metrics use d1's lenient evaluation parser and, like d1, count a
row we cannot score (a reference of null) as wrong: they are over ``n + skipped`` rows.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl
from bgpo.tasks import TASKS, get_task
from bgpo.tasks.base import RowError

_D1_SHARD = re.compile(r"(.+)_\d+_generations\.json$")
_TASK_OF_PREFIX = {"gsm8k": "math", "gsm": "math", "math500": "math", "math": "math", "countdown": "countdown",
                   "sudoku": "sudoku", "humaneval": "code", "mbpp": "code", "code": "code"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path,
                        help="files or folders of generations (*.jsonl ours, *_generations.json d1's)")
    parser.add_argument("--task", choices=sorted(TASKS),
                        help="task of every row (default: the row's 'task' field or the d1 file name)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the per-setup table as JSON")
    parser.add_argument("--details", type=Path, metavar="PATH",
                        help="write one JSONL line per generation (setup, index, reward, correct)")


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise BGPOError(f"{path} does not exist; pass generation files or folders")
    if not files:
        raise BGPOError(f"no .json/.jsonl files in {', '.join(map(str, paths))}")
    return files


def _task_from_name(setup: str) -> str | None:
    return _TASK_OF_PREFIX.get(setup.split("_")[0].lower())


def read_generations(path: Path, task: str | None = None) -> tuple[str, list[tuple[str, str, dict]]]:
    """(setup, [(task, completion, raw row)]) of one file; rows missing a field raise BGPOError."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("generations"), list):
            raise BGPOError(f"{path}: not a d1 generations file (expected {{'generations': [...]}})")
        match = _D1_SHARD.match(path.name)
        setup = match.group(1) if match else path.stem
        name = task or _task_from_name(setup)
        if name is None:
            raise BGPOError(f"{path}: cannot tell the task from the file name; pass --task")
        rows = []
        for i, item in enumerate(data["generations"]):
            if not isinstance(item.get("generations"), str):
                raise BGPOError(f"{path}: row {i}: field 'generations': missing or not text")
            rows.append((name, item["generations"], item))
        return setup, rows
    rows = []
    for line_no, row in iter_jsonl(path):
        name = task or row.get("task")
        if name not in TASKS:
            raise BGPOError(f"{path}: line {line_no}: field 'task': {name!r} is not one of {sorted(TASKS)}; "
                            "add it to the row or pass --task")
        if not isinstance(row.get("completion"), str):
            raise BGPOError(f"{path}: line {line_no}: field 'completion': missing or not text")
        rows.append((name, row["completion"], row))
    return path.stem, rows


def score_files(paths: list[Path], task: str | None = None) -> tuple[list[dict], list[dict]]:
    """Per-setup summary rows and per-generation detail rows."""
    groups: dict[tuple[str, str], dict] = defaultdict(lambda: {"files": 0, "completions": [], "examples": [], "skipped": []})
    for path in tqdm(_files(paths), desc="reading", unit="file", leave=False):
        setup, rows = read_generations(path, task)
        for i, (name, completion, row) in enumerate(rows):
            group = groups[(setup, name)]
            try:
                example = get_task(name).from_row(row)
            except RowError as err:  # e.g. a reference answer of null: unscorable, reported, skipped
                group["skipped"].append(f"{path}: row {i}: {err}")
                continue
            group["completions"].append(completion)
            group["examples"].append(example)
        for name in {name for name, _, _ in rows}:
            groups[(setup, name)]["files"] += 1
    summary, details = [], []
    for (setup, name), group in tqdm(sorted(groups.items()), desc="scoring", unit="setup", leave=False):
        task = get_task(name)
        rewards = task.rewards(group["completions"], group["examples"])
        n, skipped = len(rewards), len(group["skipped"])
        metrics = task.metrics(group["completions"], group["examples"], rewards)
        unskipped = n / (n + skipped) if n + skipped else 0.0
        metrics = {key: value * unskipped if key.startswith("d1_") else value for key, value in metrics.items()}
        summary.append({"setup": setup, "task": name, "files": group["files"], "n": n, "skipped": skipped,
                        "skipped_rows": group["skipped"], "primary_metric": task.primary_metric, "metrics": metrics})
        details += [{"setup": setup, "task": name, "index": i, "reward": r, "correct": r == 1.0}
                    for i, r in enumerate(rewards)]
    return summary, details


def format_table(summary: list[dict]) -> str:
    """One line per setup: its metrics in percent, the primary one marked ``*``."""
    lines = [f"{'setup':<34} {'task':<10} {'n':>5} {'skipped':>8}  metrics in % (* primary)"]
    for row in summary:
        metrics = "  ".join(f"{key}{'*' if key == row['primary_metric'] else ''} {100 * value:.2f}"
                            for key, value in row["metrics"].items())
        lines.append(f"{row['setup']:<34} {row['task']:<10} {row['n']:>5} {row['skipped']:>8}  {metrics}")
    for row in summary:
        lines += [f"skipped {message}" for message in row["skipped_rows"]]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    summary, details = score_files(args.paths, args.task)
    print(format_table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": summary}, indent=2) + "\n", encoding="utf-8")
    if args.details:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        with args.details.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in details)
    return 0
