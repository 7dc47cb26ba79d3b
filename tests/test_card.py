import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from score import evaluate as ev
from score.card import (
    EVALUATIONS_END,
    EVALUATIONS_START,
    evaluate_with_card,
    own_evaluations,
    refresh_card,
    train_with_card,
    write_card,
)
from score.config import REPO_ROOT, ScoreError, load_config
from score.data import Problem, training_problems
from score.provenance import model_files_sha256
from test_trainer import tiny_config
from transformers import AutoModelForCausalLM

NO_EVALUATION = "No `--task evaluate` of these weights yet."


def test_a_run_writes_its_card_and_its_own_evaluations_refresh_it(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "code" / "main.py"), "--task", "train", "--config", "tiny.yaml"])
    steps = ["train.stage1_steps=1", "train.stage2_steps=1", "train.save_every=0", "rollout.max_new_tokens=4"]
    evaluation = [f"eval.source={sample_jsonl}", "eval.max_new_tokens=4", "eval.max_problems=3"]
    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *steps, *evaluation)
    final = train_with_card(cfg, reward_fn=lambda texts, problems: [1.0] * len(texts)) / "final"
    card = ModelCard.load(final / "README.md")  # the hub's own parser reads the header
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"
    assert {"score", "self-correction", "reinforcement-learning", "math"} <= set(card.data.tags)
    assert card.data.base_model is None and card.data.eval_results is None  # a local base model is no hub id
    assert (
        "SCoRe (Kumar et al., 2024): Stage I (1 step) then Stage II with reward shaping alpha 10 (1 step)" in card.text
    )
    assert "| train.lr | 0.001 |" in card.text and "| train.beta2 | 0.1 |" in card.text
    problems = len(training_problems(cfg.data))
    assert f"- {problems} training problems from `{sample_jsonl}` (math domain)" in card.text
    assert NO_EVALUATION in card.text
    assert "python code/main.py --task train --config tiny.yaml" in card.text
    (final / "README.md").write_text((final / "README.md").read_text() + "\nNotes by hand.\n")

    out = evaluate_with_card(cfg)  # eval.model empty: this run's final/
    metrics = json.loads((out / "metrics.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    assert settings["model_files_sha256"] == model_files_sha256(final)  # the refreshed card changed no hash
    card = ModelCard.load(final / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {
        "Accuracy@t1": round(100 * metrics["accuracy_t1"], 1),
        "Accuracy@t2": round(100 * metrics["accuracy_t2"], 1),
    }
    assert {r.dataset_name for r in card.data.eval_results} == {out.name}
    assert metadata_load(final / "README.md")["model-index"][0]["name"] == "tiny"
    assert ev.table_row(out.name, metrics) in card.text and NO_EVALUATION not in card.text
    assert card.text.endswith("\nNotes by hand.\n")  # the rest of the card is kept

    # An evaluation recorded for another folder, and one of other weights in this folder, are not this model's.
    other = out.with_name("other")
    shutil.copytree(out, other)
    (other / "settings.json").write_text(json.dumps({**settings, "model": str(tmp_path / "elsewhere")}))
    refresh_card(final)
    assert {r.dataset_name for r in ModelCard.load(final / "README.md").data.eval_results} == {out.name}
    model = AutoModelForCausalLM.from_pretrained(final)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    model.save_pretrained(final)  # trained further: the evaluation is of the earlier weights
    refresh_card(final)
    card = ModelCard.load(final / "README.md")
    assert card.data.eval_results is None and NO_EVALUATION in card.text and "model-index" not in card.content


def write_hub_base(base_dir: Path) -> None:
    """A base model as `--task download` leaves a hub model: its own card holds its license."""
    folder = base_dir / "Owner" / "Base-1B"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [en]\n---\n# Base-1B\n")


def problem(domain: str) -> Problem:
    return Problem(id=domain, problem="p", solution="s", answer="1", subject="s", level=1, domain=domain)


@pytest.mark.parametrize("merged", [False, True])
def test_card_header_of_a_hub_base_model_with_a_lora_adapter(tmp_path, merged):
    write_hub_base(tmp_path / "base_models")
    cfg = load_config(
        None,
        [
            "model.name=Owner/Base-1B",
            f"model.base_dir={tmp_path / 'base_models'}",
            "data.source=Org/math-problems",
            "eval.source=Org/math-500",
        ],
    )
    final = tmp_path / "runs" / "lora" / "final"
    adapter = final / "adapter" if merged else final
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["v", "q"]}))
    (adapter / "adapter_model.safetensors").write_bytes(b"adapter")
    if merged:
        (final / "config.json").write_text("{}")
        (final / "model.safetensors").write_bytes(b"weights")
    write_card(final, cfg, [problem("math"), problem("code")])
    header = metadata_load(final / "README.md")
    assert header["base_model"] == "Owner/Base-1B" and header["license"] == "apache-2.0"
    assert header["datasets"] == ["Org/math-500", "Org/math-problems"]
    assert header["library_name"] == ("transformers" if merged else "peft")
    assert {"code", "math", "lora", "peft"} <= set(header["tags"])
    text = ModelCard.load(final / "README.md").text
    where = "final/adapter/" if merged else "final/"
    assert f"a LoRA adapter (peft, `{where}`: rank 8, alpha 16, on q, v) to load on the base model" in text
    assert ("and the merged full weights" in text) == merged
    assert "- 2 training problems from `Org/math-problems` (code, math domains)" in text


def test_local_base_model_and_data_are_left_out_of_the_header(tmp_path):
    (tmp_path / "math.jsonl").write_text("")
    cfg = load_config(None, [f"model.name={tmp_path / 'no-card-model'}", f"data.source={tmp_path / 'math.jsonl'}"])
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    write_card(final, cfg, [problem("math")])
    header = metadata_load(final / "README.md")
    assert "license" not in header and "base_model" not in header and "datasets" not in header


def test_refresh_leaves_other_cards_alone_and_names_a_broken_header(tmp_path, capsys):
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    refresh_card(final)  # no card: nothing written
    assert not (final / "README.md").exists()
    theirs = "---\nlicense: mit\n---\n# Somebody's own card\n"
    (final / "README.md").write_text(theirs)
    refresh_card(final)
    assert (final / "README.md").read_text() == theirs
    broken = f"---\n[unclosed\n---\n{EVALUATIONS_START}\nold\n{EVALUATIONS_END}\n"
    (final / "README.md").write_text(broken)
    refresh_card(final)
    assert (final / "README.md").read_text() == broken
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"card: {final / 'README.md'} not refreshed, its header does not parse (")


def test_a_card_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    final = tmp_path / "run" / "final"
    (final / "README.md").mkdir(parents=True)  # a folder where the card belongs
    with pytest.raises(ScoreError, match=r"^cannot write the model card .*final/README.md: Is a directory$"):
        write_card(final, load_config(None, [f"model.name={tmp_path / 'base'}"]), [problem("math")])
    (final / "README.md").rmdir()
    write_card(final, load_config(None, [f"model.name={tmp_path / 'base'}"]), [problem("math")])
    before = (final / "README.md").read_text()

    def disk_full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ModelCard, "save", disk_full)
    refresh_card(final)  # after an evaluation: named, and the evaluation still succeeds
    assert (
        capsys.readouterr().out
        == f"card: {final / 'README.md'} not refreshed, it cannot be written (No space left on device)\n"
    )
    assert (final / "README.md").read_text() == before


def test_a_damaged_adapter_config_is_named(tmp_path):
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(ScoreError, match=r"^.*final/adapter_config.json is damaged \(not a JSON object\)$"):
        write_card(final, load_config(None, [f"model.name={tmp_path / 'base'}"]), [problem("math")])


@pytest.mark.parametrize(
    "card, reason",
    [
        (f"---\ntags: 7\n---\n{EVALUATIONS_START}\nold\n{EVALUATIONS_END}\n".encode(), "its header does not parse"),
        (f"---\nlicense: mit\n---\n{EVALUATIONS_START}\n\xff\n".encode("latin-1"), "it cannot be read"),
    ],
    ids=["tags_not_a_list", "not_utf8"],
)
def test_a_card_of_the_wrong_kind_or_not_utf8_is_named_and_kept(tmp_path, capsys, card, reason):
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "README.md").write_bytes(card)
    refresh_card(final)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"card: {final / 'README.md'} not refreshed, {reason} (")
    assert (final / "README.md").read_bytes() == card


def test_only_whole_evaluations_of_these_weights_are_listed(tmp_path):
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    settings = {"model": str(final), "model_files_sha256": model_files_sha256(final)}
    evaluations = {
        "listed": (json.dumps(settings).encode(), b'{"n": 2, "accuracy_t1": 0.5}'),
        "metrics_a_list": (json.dumps(settings).encode(), b"[0.5]"),
        "metrics_cut_short": (json.dumps(settings).encode(), b'{"n": 2, "accu'),
        "settings_not_text": (b"\xff\xfe", b'{"n": 2, "accuracy_t1": 0.5}'),
    }
    for name, (settings_bytes, metrics_bytes) in evaluations.items():
        (final.parent / "eval" / name).mkdir(parents=True)
        (final.parent / "eval" / name / "settings.json").write_bytes(settings_bytes)
        (final.parent / "eval" / name / "metrics.json").write_bytes(metrics_bytes)
    assert [name for name, _, _ in own_evaluations(final)] == ["listed"]
