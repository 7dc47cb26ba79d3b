import dataclasses
import json
import re

import pytest
import yaml
from score.config import REPO_ROOT, Config, ScoreError, first_line, load_config, parse_override, resolve_path
from score.data import load_math


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_yaml_documents_every_default():
    # configs/default.yaml is the reference: it must list every key with the dataclass default.
    assert load_config(REPO_ROOT / "configs" / "default.yaml") == Config()
    written = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text())
    assert written == Config().to_dict()


def test_paper_hyperparameters_are_the_defaults():
    cfg = Config()
    assert cfg.model.name == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.alpha) == (5e-6, 512, 10.0)
    assert (cfg.train.beta1, cfg.train.beta2) == (0.01, 0.1)
    assert cfg.train.stage1_steps + cfg.train.stage2_steps == 3000
    assert cfg.rollout.temperature == 1.0 and cfg.eval.temperature == 0.0
    assert cfg.prompts.first_turn.startswith("You are a math expert.")
    assert cfg.prompts.correction.startswith("There might be an error in the solution above")


def test_every_field_has_help():
    cfg = Config()
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help"


def test_every_config_file_loads():
    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        load_config(path)


def test_qwen_math_recipe_has_pags_settings_and_tests_on_math500(monkeypatch):
    import datasets
    from score.evaluate import load_test_problems

    cfg = load_config(REPO_ROOT / "configs" / "qwen2.5-1.5b-math.yaml")
    assert cfg.model.name == "Qwen/Qwen2.5-1.5B-Instruct" and cfg.rollout.engine == "vllm"
    # PAG: 128 problems x 4 samples per optimizer step; 20 epochs of 7,500 // 512 batches x 4 mini-batches per stage
    assert (cfg.train.batch_size, cfg.rollout.samples_per_prompt) == (128, 4)
    assert cfg.train.stage1_steps == cfg.train.stage2_steps == 20 * (7500 // 512) * 4
    t = cfg.train
    assert (t.lr, t.alpha, t.beta1, t.beta2, t.gamma, t.kl_mode) == (1e-6, 1.0, 0.0, 0.1, 0.0, "reward")
    assert cfg.rollout.max_new_tokens == cfg.eval.max_new_tokens == 2048
    assert cfg.rollout.vllm_max_model_len >= 1024 + 2 * 2048 + 100  # PAG's longest prompt, both attempts, p
    assert cfg.train.max_grad_norm == Config().train.max_grad_norm and cfg.eval.temperature == 0  # unlisted: paper
    # MATH's own train split (not the paper's 12,000); the test problems are MATH-500 from the hub, not a local path
    assert (cfg.data.source, cfg.data.scheme) == ("data/MATH", "full")
    row = {"problem": "1 + 1?", "solution": "", "answer": "2", "subject": "Algebra", "level": 1, "unique_id": "t/1"}
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or {"test": [row]})
    problems, _ = load_test_problems(cfg)
    assert asked == ["HuggingFaceH4/MATH-500"] and [p.id for p in problems] == ["t/1"]


def test_mbpp_prompts_are_the_papers_three_shots_and_correction(tmp_path):
    # Kumar et al., 2024, Appendix C: "MBPP 3-shot Prompt" (MBPP's prompt problems 2-4) and "MBPP/HumanEval
    # Self-Correction Instruction"; the loader writes the task to solve the way each shot writes its own.
    prompts = load_config(REPO_ROOT / "configs" / "mbpp.yaml").prompts
    assert prompts.correction == (
        "There might be an error in the code above because of lack of understanding of the question. Please correct "
        "the error, if any, and rewrite the solution. Only output the final correct Python program!"
    )
    assert "Final Answer" not in prompts.self_refine
    shot = re.compile(
        r"You are an expert Python programmer, and here is your task: (.*?) Your code should pass these tests:\n\n"
        r"(.*?)\n\[BEGIN\]\n(.*?)\n\[DONE\]",
        re.DOTALL,
    )
    shots = list(shot.finditer(prompts.first_turn))
    assert "\n\n".join(m[0] for m in shots) == prompts.first_turn  # three shots and nothing else
    texts = [m[1] for m in shots]
    assert texts == [
        "Write a function to find the similar elements from the given two tuple lists.",
        "Write a python function to identify non-prime numbers.",
        "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
    ]
    rows = [
        {"task_id": n, "text": m[1], "code": m[3], "test_list": m[2].split("\n"), "test_setup_code": ""}
        for n, m in zip((2, 3, 4), shots, strict=True)
    ]
    path = tmp_path / "prompt.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for problem, m in zip(load_math(path, split="prompt"), shots, strict=True):
        assert f"{problem.problem}\n[BEGIN]\n{m[3]}\n[DONE]" == m[0]
        exec(f"{m[3]}\n{m[2]}", {})  # each shot's program passes its own tests


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1.0e-4\n  alpha: 5\nrollout:\n  samples_per_prompt: 4\n")
    cfg = load_config(path, ["train.lr=1e-5", "eval.compare=[a, b]", "model.gradient_checkpointing=true"])
    assert cfg.train.lr == 1e-5 and cfg.train.alpha == 5.0 and isinstance(cfg.train.alpha, float)
    assert cfg.rollout.samples_per_prompt == 4
    assert cfg.eval.compare == ["a", "b"]
    assert cfg.model.gradient_checkpointing is True


@pytest.mark.parametrize(
    "text, words",
    [
        ("train:\n  lrr: 1\n", ["train.lrr", "c.yaml"]),
        ("trian:\n  lr: 1\n", ["trian", "c.yaml"]),
        ("train:\n  lr: fast\n", ["train.lr", "number"]),
        ("train:\n  batch_size: 2.5\n", ["train.batch_size", "integer"]),
        ("model:\n  gradient_checkpointing: 1\n", ["model.gradient_checkpointing", "true or false"]),
        ("train:\n  lr: -1.0e-5\n", ["train.lr", "positive"]),
        ("train:\n  beta2: -0.1\n", ["train.beta2", "negative"]),
        ("train:\n  kl_estimator: k2\n", ["train.kl_estimator", "k3"]),
        ("grader:\n  extraction: loose\n", ["grader.extraction", "lenient"]),
        ("train:\n  batch_size: 3\n  micro_batch_size: 4\n", ["train.batch_size", "divisible"]),
        ("rollout:\n  samples_per_prompt: 1\n", ["samples_per_prompt", "loo"]),
        ("data:\n  levels: [6]\n", ["data.levels", "1-5"]),
        ("rollout:\n  tis_cap: 0.5\n", ["rollout.tis_cap", "at least 1"]),
        ("rollout:\n  tis_cap: -2\n", ["rollout.tis_cap", "-1 (by engine)"]),
        ("train: [1, 2]\n", ["train", "mapping"]),
        ("train:\n  lr: [\n", ["c.yaml", "YAML"]),
        ("train:\n  stage1_steps: 0\n  stage2_steps: 0\n", ["no training steps"]),
    ],
)
def test_bad_configs_name_the_key_and_file(tmp_path, text, words):
    with pytest.raises(ScoreError) as e:
        load_config(write(tmp_path, text))
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("text", ["lr=1", "train.lr", "=3", "train.=3"])
def test_malformed_override(text):
    with pytest.raises(ScoreError, match="section.key=value"):
        parse_override(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ScoreError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_resolve_from_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("data/MATH") == REPO_ROOT / "data" / "MATH"
    assert resolve_path(tmp_path) == tmp_path


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["train.run_name=x", "data.subjects=[algebra]"])
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_string_settings_are_read_as_written(tmp_path):
    # YAML 1.1 reads 12:30 as 750 (base 60) and 007 as 7: a run name is a string, taken as the file spells it.
    cfg = load_config(write(tmp_path, "train:\n  run_name: 12:30\nexperiment:\n  name: 007\n"), ["eval.compare=[007]"])
    assert (cfg.train.run_name, cfg.experiment.name, cfg.eval.compare) == ("12:30", "007", ["007"])
    assert load_config(None, ["train.run_name=007", "train.lr=1e-5"]).train.run_name == "007"
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.run_name=../../escaped"], ["train.run_name", "'../../escaped'", "folder name"]),
        (["train.run_name="], ["train.run_name", "''", "folder name"]),
        (["train.run_name=.."], ["train.run_name", "folder name"]),
        (["experiment.name=a/b"], ["experiment.name", "folder name"]),
        (["eval.name=../x"], ["eval.name", "folder name"]),
        (["train.lr=1e999"], ["train.lr", "finite", "inf"]),
        (["train.beta1=.nan"], ["train.beta1", "finite"]),
        (["train.seed=-1"], ["train.seed", "[0, 2**31)"]),
        (["data.seed=4294967296"], ["data.seed", "[0, 2**31)"]),
        (["experiment.seeds=[0, -1]"], ["experiment.seeds", "[0, 2**31)"]),
        (["model.attn_implementation=bogus"], ["model.attn_implementation", "'bogus'", "sdpa"]),
    ],
)
def test_bad_names_and_values_are_one_line(overrides, words):
    with pytest.raises(ScoreError) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_an_empty_eval_name_is_derived_from_the_data():
    assert load_config(None, ["eval.name="]).eval.name == ""


def test_a_key_given_twice_is_an_error_naming_it_and_its_lines(tmp_path):
    with pytest.raises(ScoreError, match=r"c.yaml: duplicate key 'train.lr' on lines 2 and 4"):
        load_config(write(tmp_path, "train:\n  lr: 1.0e-4\n  alpha: 5\n  lr: 1.0e-3\n"))
    with pytest.raises(ScoreError, match=r"duplicate key 'train' on lines 1 and 3"):
        load_config(write(tmp_path, "train:\n  lr: 1.0e-4\ntrain:\n  alpha: 5\n"))


def test_first_line_of_an_error_is_its_message_or_its_type():
    assert first_line(ValueError("bad value\n  at line 2")) == "bad value"
    assert first_line(ConnectionError()) == "ConnectionError"


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScoreError, match=f"^{path}: not UTF-8 text") as error:
        load_config(path)
    assert "\n" not in str(error.value)


# Nine lists of ten, each of the one before: 10**9 strings once expanded, a few hundred bytes as written. A string
# field's error message would print the value whole.
BOMB = ["&a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"&{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
]


@pytest.mark.parametrize("where", ["file", "override"])
def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path, where):
    path = tmp_path / "bomb.yaml"
    if where == "file":
        path.write_text("train:\n  run_name:\n" + "".join(f"    - {item}\n" for item in BOMB))
        overrides = []
    else:
        path.write_text("train:\n  run_name: fine\n")
        overrides = [f"train.run_name=[{', '.join(BOMB)}]"]
    with pytest.raises(ScoreError, match="alias") as error:
        load_config(path, overrides)
    assert len(str(error.value)) < 300 and "\n" not in str(error.value)
