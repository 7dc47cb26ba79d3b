"""--task push: upload a trained model folder (final/, with its model card) to the Hugging Face Hub.

huggingface_hub's HfApi creates the repository (push.private; an existing one is kept as it is), the branch
push.revision if it is missing, and uploads every file of the folder in one commit. The token is HF_TOKEN's,
else the one `hf auth login` saved; HF_ENDPOINT chooses another hub (the tests' local stand-in).
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token, metadata_load

from score.card import ADAPTER, HUB_ID, adapter_settings
from score.config import Config, ScoreError, first_line, resolve_path
from score.provenance import MODEL_CARD


def push_folder(cfg: Config) -> Path:
    """push.folder, else the final model of the run this config trains."""
    if cfg.push.folder:
        return resolve_path(cfg.push.folder)
    return resolve_path(cfg.train.output_dir) / cfg.train.run_name / "final"


def upload_operations(folder: Path) -> list[CommitOperationAdd]:
    """Every file of the folder. peft writes the base model of an adapter as the path it was loaded from, this
    machine's; the uploaded adapter_config.json names the card's base_model (a hub id) instead, so the adapter loads
    from the hub. Without one the file goes as it is, with a warning line."""
    base = (metadata_load(folder / MODEL_CARD) or {}).get("base_model")
    operations = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        content: Path | bytes = path
        if path.name == ADAPTER:
            adapter = adapter_settings(path)
            named = adapter.get("base_model_name_or_path")
            if named and (Path(named).is_absolute() or Path(named).is_dir()):
                if base:
                    content = (json.dumps({**adapter, "base_model_name_or_path": base}, indent=2) + "\n").encode()
                else:
                    print(f"warning: {path} names its base model by this machine's path ({named}) and the card "
                          "names no hub base_model: the pushed adapter loads only where that path exists")  # fmt: skip
        operations.append(CommitOperationAdd(path.relative_to(folder).as_posix(), content))
    return operations


def push(cfg: Config) -> str:
    """Upload the model folder to push.repo; returns the commit's URL."""
    repo, revision = cfg.push.repo, cfg.push.revision or None
    if not HUB_ID.fullmatch(repo):
        raise ScoreError(f"push.repo {repo!r} is not a hub repository name (owner/name)")
    folder = push_folder(cfg)
    if not folder.is_dir():
        raise ScoreError(f"no model folder {folder} to push; train first (same config) or set push.folder")
    if not (folder / MODEL_CARD).is_file():
        raise ScoreError(
            f"{folder} has no model card ({MODEL_CARD}); a run writes one when it saves final/, or write your own"
        )
    if get_token() is None:
        raise ScoreError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    message = cfg.push.commit_message or f"Upload {folder.parent.name}/{folder.name} trained with SCoRe"
    api = HfApi()
    try:
        api.create_repo(repo, private=cfg.push.private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        commit = api.create_commit(repo, upload_operations(folder), commit_message=message, revision=revision)
    except Exception as e:  # the hub's HTTP errors and its HTTP client's (httpx or httpx2, by version) alike
        raise ScoreError(f"push of {folder} to {repo} failed: {first_line(e)}") from None
    print(f"pushed {folder} to {api.endpoint}/{repo} ({commit.commit_url})")
    return commit.commit_url
