"""What decided a result: the model's files, the data, and the settings that change the numbers.

Each config field says in its metadata which results it decides (config.TRAIN: the weights an RL run trains,
config.SFT: those a supervised baseline trains, config.EVAL: an evaluation's generations). A resume, an evaluation
reuse, an experiment's reuse of a finished row and the model card compare what they find on disk with what they
would compute now through this module, and name each difference in one line as 'name (old -> new)'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from score.config import Config, ScoreError
from score.data import Problem
from score.models import adapter_base

MODEL_CARD = "README.md"  # a model folder's card (card.py): it describes the model and changes no generation
RECORD = "provenance.json"  # in a run folder: the model files and data the run trained from


def flat_settings(cfg: Config) -> dict[str, object]:
    return {f"{section}.{key}": value for section, part in cfg.to_dict().items() for key, value in part.items()}


def deciding(result: str | None = None) -> list[str]:
    """The names (section.key) of the settings that decide `result` (None: any result), as the fields declare."""
    names = []
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.default_factory()):
            decides = item.metadata["decides"]
            if decides if result is None else result in decides:
                names.append(f"{section.name}.{item.name}")
    return names


def settings(cfg: Config, result: str | None = None) -> dict[str, object]:
    """The values of the settings that decide `result` (None: any result)."""
    flat = flat_settings(cfg)
    return {name: flat[name] for name in deciding(result)}


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_files(model: Path) -> dict[str, str]:
    """sha256 of each file of a model folder, by name: weights, config, generation config, tokenizer and chat
    template all change what the model computes. Hidden files (download caches) and the model card are left out.
    A LoRA adapter folder adds its base model's files as base/<name>: the adapter means nothing without them."""
    described = (p for p in model.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != MODEL_CARD)
    files = {path.name: file_sha256(path) for path in sorted(described)}
    try:
        base = adapter_base(model)
    except ScoreError:  # a damaged adapter folder: evaluation and training refuse it when they load it
        base = None
    if base is not None:
        files.update({f"base/{name}": digest for name, digest in model_files(base).items()})
    return files


def files_sha256(files: dict[str, str]) -> str:
    """One sha256 over what model_files gives (the form evaluation records keep): each file's name and digest, and
    a base model's files folded in as one digest of their own."""
    digest = hashlib.sha256()
    for name, value in files.items():
        if not name.startswith("base/"):
            digest.update(name.encode() + b"\0" + bytes.fromhex(value))
    base = {name.removeprefix("base/"): value for name, value in files.items() if name.startswith("base/")}
    if base:
        digest.update(b"base\0" + files_sha256(base).encode())
    return digest.hexdigest()


def model_files_sha256(model: Path) -> str:
    return files_sha256(model_files(model))


def sha256_of(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def data_sha256(problems: list[Problem]) -> str:
    """The problems in their order, gold answers and tests included."""
    return sha256_of([dataclasses.asdict(p) for p in problems])


def shortened(value):
    """A sha256 digest cut to 12 characters, as difference lines show it; any other value as it is."""
    return value[:12] if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else value


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'name (old -> new)' for every name whose value differs between two records (a name one lacks: None);
    nested records (model files) name the entry that differs."""

    def shown(value) -> str:
        return value[:12] if shortened(value) != value else repr(value)

    changed = []
    for name in dict.fromkeys([*old, *new]):  # in the records' order (a config's: its fields')
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += differences(a, b, f"{prefix}{name}: ")
        elif a != b:
            changed.append(f"{prefix}{name} ({shown(a)} -> {shown(b)})")
    return changed


def files_record(model: Path, problems: list[Problem]) -> dict:
    """The part of a run's record that the config does not hold: its start model's files and its data."""
    return {"model files": model_files(model), "data": data_sha256(problems)}
