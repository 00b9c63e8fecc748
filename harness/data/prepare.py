"""A real suite's `dataset:` turned into the files the runner reads, as the sandbox provides them.

The dataset (a local file or folder, or a Hub id; harness.data.loading) is read once per
(source, `data:` settings, tokenizer, max_length) and written as the sandbox's files under
`$HARNESS_CACHE/datasets/<key>/`, so that every data shape reaches the trainer the same way:

    pairs_train      the train split as pairs              (paired methods)
    unpaired_train   the train split unpaired (TRL's convention: chosen desirable, rejected not),
                     or the dataset's own prompt/completion/label rows       (KTO-style methods)
    sft_train        prompt/completion demonstrations, when the dataset has them  (SPIN)
    sessions_train   multi-turn sessions, when the dataset has them               (SDPO)
    pairs_eval       the eval split as pairs: evaluation prompts, implicit-reward accuracy
    unpaired_eval    the eval split unpaired: the evaluation prompts of unpaired-only data

A shape the dataset cannot provide gets no file; a method that needs it then fails with a
one-line error naming the shape. Training needs pairs or unpaired rows, evaluation pairs or
unpaired rows of the eval split; without either, the pairs loader's error is the message. What loading did (rows read, dropped by reason, truncated) is
written beside the files as `stats.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import cached_folder, content_hash
from harness.data.jsonl import read_jsonl, write_jsonl
from harness.data.loading import LoadedRows, MissingColumns, load_rows, read_records
from harness.data.tokenize import Prompt, distinct_prompts, prompt_key
from harness.errors import HarnessError
from harness.suite import DataConfig

LOADER_VERSION = 4  # 3: conversations kept as messages; 4: a reply ends at its end-of-turn token (truncation counts); bump when loading would produce different rows or files from the same source
# runner shape -> (loading shape, file name, split attribute of DataConfig); every one optional,
# but training needs pairs or unpaired rows, and evaluation prompts from pairs or unpaired rows.
SHAPES = {
    "paired": ("pairs", "pairs_train", "train_split"),
    "unpaired": ("unpaired", "unpaired_train", "train_split"),
    "sft": ("sft", "sft_train", "train_split"),
    "sessions": ("sessions", "sessions_train", "train_split"),
    "eval_pairs": ("pairs", "pairs_eval", "eval_split"),
    "eval_unpaired": ("unpaired", "unpaired_eval", "eval_split"),
    # a tuned suite's named validation split (data.validation_split), when one is given
    "validation_pairs": ("pairs", "pairs_validation", "validation_split"),
    "validation_unpaired": ("unpaired", "unpaired_validation", "validation_split"),
}
NEEDED = (("pairs_train", "unpaired_train"), ("pairs_eval", "unpaired_eval"))  # one of each


@dataclass(frozen=True)
class PreparedData:
    files: dict[str, Path]  # runner shape (and "eval_pairs") -> jsonl file
    prompts: list[Prompt]  # distinct evaluation prompts (texts or conversations), in the eval split's order
    stats: dict[str, Any]  # file name -> what loading did (harness.data.loading.LoadStats)

    def validation_prompts(self, test: int, n: int, *, where: str) -> list[Prompt]:
        """A tuned suite's validation prompts: the first `n` distinct prompts of the named
        validation split (data.validation_split), else the eval split's after the `test` ones
        evaluation reads (disjoint from them by construction)."""
        named = [self.files[k] for k in ("validation_pairs", "validation_unpaired") if k in self.files]
        pool = distinct_prompts(r["prompt"] for r in read_jsonl(named[0])) if named else self.prompts[test:]
        out = pool[:n]
        if len(out) < n:
            split = "validation split" if named else f"eval split (after its {test} test prompts)"
            raise HarnessError(f"{where}: tune: the {split} has {len(pool)} distinct prompts, fewer than "
                               f"tune.validation_prompts = {n}; lower it")
        return out


def check_disjoint(validation: list[Prompt], test: list[Prompt], training: set[str], *, where: str) -> None:
    """Selection must not see a test prompt or a training prompt: refuse validation prompts that
    overlap either, naming one (`training`: the training prompts' keys, harness.data.tokenize.prompt_key)."""
    for name, other in (("test", {prompt_key(p) for p in test}), ("training", training)):
        shared = [p for p in validation if prompt_key(p) in other]
        if shared:
            raise HarnessError(f"{where}: {len(shared)} validation prompts are also {name} prompts "
                               f"(e.g. {shared[0]!r}); selection must read prompts of its own: use a "
                               "validation set disjoint from the test prompts and the training data")


def prepare_dataset(source: str, data: DataConfig, tokenizer, tokenizer_key: str, max_length: int,
                    *, where: str) -> PreparedData:
    """Read `source` into the sandbox's file layout (once; later calls read the cache)."""
    settings = {k: v for k, v in vars(data).items() if k != "validation_split" or v}  # keys predate it
    key = content_hash({"source": source, "data": settings, "tokenizer": tokenizer_key,
                        "max_length": max_length, "version": LOADER_VERSION})
    folder, _ = cached_folder("datasets", key, lambda tmp: _write(tmp, _load_all(source, data, tokenizer, max_length, where)))
    files = {shape: folder / f"{name}.jsonl" for shape, (_, name, _) in SHAPES.items()
             if (folder / f"{name}.jsonl").exists()}
    held_out = read_jsonl(files["eval_pairs"] if "eval_pairs" in files else files["eval_unpaired"])
    prompts = distinct_prompts(row["prompt"] for row in held_out)
    return PreparedData(files, prompts, json.loads((folder / "stats.json").read_text()))


def _read_splits(source: str, data: DataConfig, where: str) -> dict[str, tuple[list[dict], str]]:
    """Each split's records, read once; an eval split that is the train split is refused (a
    single file, or a folder whose files name no split, has one split only)."""
    named = [data.train_split, data.eval_split] + ([data.validation_split] if data.validation_split else [])
    try:
        splits = {split: read_records(source, split) for split in named}
    except HarnessError as err:
        raise HarnessError(f"{where}: dataset: {err}") from None
    if data.train_split != data.eval_split and splits[data.train_split][0] == splits[data.eval_split][0]:
        raise HarnessError(
            f"{where}: dataset {source!r} gives the same rows for data.train_split {data.train_split!r} and "
            f"data.eval_split {data.eval_split!r}; evaluating on training prompts is not a held-out test: "
            "give a folder with one file per split (train.jsonl, test.jsonl) or a Hub dataset with both splits"
        )
    return splits


def _load_all(source: str, data: DataConfig, tokenizer, max_length: int, where: str) -> dict[str, LoadedRows]:
    splits = _read_splits(source, data, where)
    loaded, errors = {}, {}
    for loading_shape, name, split_attr in SHAPES.values():
        if not getattr(data, split_attr):  # no validation split named
            continue
        try:
            loaded[name] = load_rows(
                source, loading_shape, tokenizer=tokenizer, split=getattr(data, split_attr), max_length=max_length,
                max_prompt_length=data.max_prompt_length or None, on_invalid=data.on_invalid,
                records=splits[getattr(data, split_attr)],
            )
        except MissingColumns as err:  # a shape the data does not have: no file (bad rows are errors)
            errors[name] = err
        except HarnessError as err:
            raise HarnessError(f"{where}: dataset: {err}") from None
    for names in NEEDED:
        if not any(name in loaded for name in names):
            raise HarnessError(f"{where}: dataset: {errors[names[0]]}")
    return loaded


def _write(folder: Path, loaded: dict[str, LoadedRows]) -> None:
    for name, rows in loaded.items():
        write_jsonl(folder / f"{name}.jsonl", rows.rows)
    (folder / "stats.json").write_text(json.dumps({name: rows.stats.as_dict() for name, rows in loaded.items()}, indent=1))
