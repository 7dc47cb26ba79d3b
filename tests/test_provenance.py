import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from score import evaluate as ev
from score.config import EVAL, SFT, TRAIN, Config, load_config
from score.provenance import deciding, differences, model_files, model_files_sha256, settings


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def adapter_on_base(tmp_path: Path) -> tuple[Path, Path]:
    base = write_files(tmp_path / "base", {"config.json": "{}", "model.safetensors": "W"})
    adapter = {
        "adapter_config.json": json.dumps({"base_model_name_or_path": str(base)}),
        "adapter_model.safetensors": "A",
    }
    return write_files(tmp_path / "adapter", adapter), base


def test_every_config_field_says_which_results_it_decides():
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.default_factory()):
            decides = item.metadata.get("decides")
            assert isinstance(decides, tuple) and set(decides) <= {TRAIN, SFT, EVAL}, f"{section.name}.{item.name}"


def test_settings_are_the_fields_marked_for_a_result():
    cfg = load_config(None, ["train.lr=0.5", "train.run_name=other"])
    trained = settings(cfg, TRAIN)
    assert trained["train.lr"] == 0.5 and "train.run_name" not in trained and "eval.temperature" not in trained
    assert "eval.temperature" in settings(cfg, EVAL) and "sft.lr" in settings(cfg, SFT) and "sft.lr" in settings(cfg)
    assert "model.base_dir" not in deciding() and "grader.workers" not in deciding()


def test_an_adapters_files_include_its_bases(tmp_path):
    adapter, base = adapter_on_base(tmp_path)
    files = model_files(adapter)
    assert set(files) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "base/config.json",
        "base/model.safetensors",
    }
    assert files["base/model.safetensors"] == hashlib.sha256(b"W").hexdigest()
    before = model_files_sha256(adapter)
    (base / "model.safetensors").write_text("other weights")  # the base replaced in place: the adapter's record moves
    assert model_files_sha256(adapter) != before
    assert differences({"model files": files}, {"model files": model_files(adapter)}) == [
        f"model files: base/model.safetensors ({hashlib.sha256(b'W').hexdigest()[:12]} -> "
        f"{hashlib.sha256(b'other weights').hexdigest()[:12]})"
    ]


def legacy_sha256(model: Path) -> str:
    """How evaluation records hashed a model folder before provenance.py: evaluations made then stay reusable."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model.iterdir() if p.is_file() and p.name != "README.md"):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    config = model / "adapter_config.json"
    if config.is_file() and not (model / "config.json").is_file():
        digest.update(
            b"base\0" + legacy_sha256(Path(json.loads(config.read_text())["base_model_name_or_path"])).encode()
        )
    return digest.hexdigest()


def test_the_model_digest_keeps_its_old_form(tmp_path):
    adapter, base = adapter_on_base(tmp_path)
    (base / "README.md").write_text("a card changes no generation")
    assert model_files_sha256(base) == legacy_sha256(base) and model_files_sha256(adapter) == legacy_sha256(adapter)


def test_differences_name_each_change_in_one_line():
    assert differences({"a": 1, "b": "x"}, {"a": 2, "b": "x", "c": True}) == ["a (1 -> 2)", "c (None -> True)"]
    assert differences({"a": "0" * 64}, {"a": "f" * 64}) == [f"a ({'0' * 12} -> {'f' * 12})"]


def test_the_evaluation_records_name_exactly_the_settings_marked_eval(tmp_path):
    cfg = load_config(None, ["eval.temperature=0.7"])
    named = set(ev.settings_fingerprint(cfg, tmp_path, "0" * 64, torch.float32, [])) | set(ev.samples_fingerprint(cfg))
    named = {name for name in named if "." in name}  # "model", "dtype" and the hashes are no settings
    prompts = {name for name in deciding(EVAL) if name.startswith("prompts.")}  # as prompts_sha256
    assert named | prompts == set(deciding(EVAL))
