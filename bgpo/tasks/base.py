"""What every task shares: the answer tags, the d1 prompt text, and data loading.

A *task* turns an example (a plain dict, the same whatever file or hub dataset it came from)
into chat messages for the policy and scores a completion with the paper's reward (the BGPO
paper's reward rules, after d1 and DARE). Loading is the one place where outside data enters, so
every malformed row is reported there with its file, row and field, as a :class:`~bgpo.errors.BGPOError`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl

Example = dict[str, Any]
Messages = list[dict[str, str]]

# d1's system prompt for countdown (and GSM8K in d1's training code): the response template.
D1_FORMAT_PROMPT = (
    "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
)

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

STYLES = ("chat", "compact")


def last_answer(completion: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` (stripped), or None when there is none."""
    matches = _ANSWER.findall(completion)
    return matches[-1].strip() if matches else None


def mean(values: Sequence[float]) -> float:
    """Mean of ``values`` (booleans count 1/0); 0.0 for none, so an empty setup reads as 0."""
    return sum(values) / len(values) if values else 0.0


def check_batch(completions: Sequence[str], examples: Sequence[Example], rewards: Sequence[float]) -> None:
    """Completions, examples and rewards must pair up one to one."""
    if not len(completions) == len(examples) == len(rewards):
        raise BGPOError(f"metrics need one example and one reward per completion, got {len(completions)} "
                        f"completions, {len(examples)} examples, {len(rewards)} rewards")


class RowError(BGPOError):
    """A row of a data file is malformed; :func:`read_rows` adds the file and row number."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}': {problem}")
        self.field, self.problem = field, problem


def field(row: Example, *names: str) -> Any:
    """The first present of ``names`` in ``row`` (aliases across dataset conventions)."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    aliases = f" (also looked for {', '.join(names[1:])})" if len(names) > 1 else ""
    raise RowError(names[0], f"missing or null{aliases}")


def unwrap_verl(row: Example) -> Example:
    """Flatten the verl parquet convention into a plain row.

    verl rows look like ``{data_source, prompt: [messages], reward_model: {ground_truth, style},
    extra_info: {...}}``; we keep ``extra_info``'s fields, expose the reference as
    ``ground_truth`` and the ready-made chat as ``messages``.
    """
    if "reward_model" not in row:
        return row
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise RowError("reward_model.ground_truth", "verl rows need reward_model = {ground_truth: ...}")
    flat = dict(row.get("extra_info") or {})
    flat["ground_truth"] = reward_model["ground_truth"]
    if row.get("data_source") is not None:
        flat["data_source"] = row["data_source"]
    prompt = row.get("prompt")
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
        flat["messages"] = [{"role": m["role"], "content": m["content"]} for m in prompt]
    elif isinstance(prompt, str):
        flat.setdefault("prompt", prompt)
    return flat


def _iter_file(path: Path) -> Iterator[Example]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from (row for _, row in iter_jsonl(path))
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("generations", data.get("data")) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise BGPOError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
        yield from rows
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # ships with `datasets`

        yield from pq.read_table(path).to_pylist()
    else:
        raise BGPOError(f"{path}: unknown data file type '{suffix}'; use .parquet, .jsonl, .json or .csv")


def read_rows(source: str | Path, convert: Callable[[Example], Example], *, split: str = "train",
              config: str | None = None) -> list[Example]:
    """Read ``source`` (a local file or a Hugging Face hub dataset name) into examples.

    Each raw row goes through :func:`unwrap_verl` and then the task's ``convert``; a row it
    rejects is reported as ``<file>: row <i>: field '<name>': <problem>``.
    """
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise BGPOError(f"{path} is a folder; pass one data file (.parquet, .jsonl, .json or .csv)")
        rows: Iterator[Example] | Sequence[Example] = _iter_file(path)
        where = str(path)
    elif "/" in str(source) and not str(source).startswith((".", "/")):
        rows = _load_hub(str(source), split, config)
        where = f"hub dataset {source} ({split})"
    else:
        raise BGPOError(f"data source '{source}' is neither an existing file nor a hub name 'org/name'")
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(convert(unwrap_verl(dict(row))))
        except RowError as err:
            raise BGPOError(f"{where}: row {i}: {err}") from None
    if not examples:
        raise BGPOError(f"{where} holds no rows")
    return examples


def _load_hub(name: str, split: str, config: str | None) -> Sequence[Example]:
    """Rows of a hub dataset through ``datasets`` (network or the local HF cache)."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # datasets raises many types: offline, missing config, auth ...
        raise BGPOError(
            f"cannot load hub dataset {name} (config {config}, split {split}): {err}; "
            "check the name, the network, or pass a local file as source"
        ) from None


class Task:
    """Base class: prompt formatting, reward, correctness and loading of one task.

    Subclasses set ``name`` and ``styles`` and implement ``from_row``, ``messages``,
    ``reward``; ``is_correct`` defaults to "reward is the maximum, 1.0". A task whose papers
    report other numbers overrides ``metrics`` and lists them in ``metric_names`` (in the order
    tables print them), with ``primary_metric`` the one a headline number means.
    """

    name: str = ""
    styles: tuple[str, ...] = ("chat",)
    metric_names: tuple[str, ...] = ("accuracy", "mean_reward")
    primary_metric: str = "accuracy"
    # split -> (hub dataset, config, hub split); empty where the paper's data is not on the hub
    hub_sources: dict[str, list[tuple[str, str | None, str]]] = {}

    def __init__(self, style: str = "chat"):
        if style not in self.styles:
            raise BGPOError(f"task {self.name} has prompt styles {self.styles}, not '{style}'")
        self.style = style

    # --- prompts and rewards -------------------------------------------------------------
    def prompt(self, example: Example) -> Messages:
        """Chat messages for ``example``; a verl row's own prompt is used as it is."""
        if self.style == "chat" and example.get("messages"):
            return [dict(m) for m in example["messages"]]
        return self.messages(example)

    def messages(self, example: Example) -> Messages:
        raise NotImplementedError

    def reward(self, completion: str, example: Example) -> float:
        raise NotImplementedError

    def rewards(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """Rewards of a batch (the code task overrides this to run programs concurrently)."""
        return [self.reward(c, e) for c, e in zip(completions, examples, strict=True)]

    def is_correct(self, completion: str, example: Example) -> bool:
        return self.reward(completion, example) == 1.0

    # --- evaluation metrics -----------------------------------------------------------------
    def metrics(self, completions: Sequence[str], examples: Sequence[Example],
                rewards: Sequence[float]) -> dict[str, float]:
        """Named evaluation metrics (fractions in [0, 1]) of ``metric_names``.

        ``rewards`` are the strict training rewards already computed for these completions, so
        nothing expensive (a code program) runs twice. Default: ``accuracy`` (reward 1) and
        ``mean_reward``.
        """
        check_batch(completions, examples, rewards)
        return {"accuracy": mean([r == 1.0 for r in rewards]), "mean_reward": mean(rewards)}

    # --- data ------------------------------------------------------------------------------
    def from_row(self, row: Example) -> Example:
        """One raw row (any supported convention) -> this task's example dict."""
        raise NotImplementedError

    def load(self, split: str = "train", source: str | Path | None = None) -> list[Example]:
        """Examples of ``split`` from ``source`` (a file or hub name), else the paper's hub data."""
        if source is not None:
            return read_rows(source, self.from_row, split=split)
        if split not in self.hub_sources:
            raise BGPOError(
                f"task {self.name} has no hub default for split '{split}' "
                f"(known: {sorted(self.hub_sources) or 'none'}); pass source=<file>"
            )
        examples: list[Example] = []
        for name, config, hub_split in self.hub_sources[split]:
            examples += read_rows(name, self.from_row, split=hub_split, config=config)
        return examples
