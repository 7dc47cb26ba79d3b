import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from score import evaluate as ev
from score import locks
from score.config import REPO_ROOT, ScoreError, load_config
from score.data import Problem
from transformers import AutoModelForCausalLM


def record(pid: str, *correct: bool, subject: str = "Algebra", level: int = 1) -> dict:
    attempts = [{"text": "", "answer": "1" if c else None, "correct": c, "truncated": False} for c in correct]
    return {"id": pid, "subject": subject, "level": level, "gold": "1", "attempts": attempts}


def hand_records() -> list[dict]:
    # 10 problems: 3 right twice, 2 wrong->right, 1 right->wrong, 4 wrong twice.
    pattern = [(1, 1)] * 3 + [(0, 1)] * 2 + [(1, 0)] + [(0, 0)] * 4
    return [
        record(f"p{i}", bool(a), bool(b), subject="Algebra" if i < 5 else "Geometry", level=1 + i % 2)
        for i, (a, b) in enumerate(pattern)
    ]


def test_paper_metrics_by_hand():
    m = ev.compute_metrics(hand_records())
    assert m["n"] == 10 and m["attempts"] == 2
    assert m["accuracy_t1"] == pytest.approx(0.4)  # 3 + 1
    assert m["accuracy_t2"] == pytest.approx(0.5)  # 3 + 2
    assert m["delta"] == pytest.approx(0.1)
    assert m["delta_i_to_c"] == pytest.approx(0.2)
    assert m["delta_c_to_i"] == pytest.approx(0.1)
    assert m["p_t2_right_given_t1_wrong"] == pytest.approx(2 / 6)
    assert m["p_t2_wrong_given_t1_right"] == pytest.approx(1 / 4)
    assert m["answer_changed"] == pytest.approx(3 / 10)  # an answer appearing or vanishing is a change
    assert m["edit_distance"] == 0.0
    assert m["delta"] == pytest.approx(m["delta_i_to_c"] - m["delta_c_to_i"])
    assert m["no_answer_t1"] == 6 and m["no_answer_t2"] == 5


def test_intervals_by_hand():
    low, high = ev.wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert ev.wilson_interval(0, 20)[0] == 0.0 and ev.wilson_interval(0, 0) == (0.0, 0.0)
    # differences [1, 1, -1, 0]: mean 0.25, sample sd sqrt(11/12), half width 1.96 * sd / 2
    low, high = ev.paired_interval([1, 1, -1, 0])
    half = 1.959963984540054 * (11 / 12) ** 0.5 / 2
    assert low == pytest.approx(0.25 - half) and high == pytest.approx(0.25 + half)


def test_three_attempts_and_groups():
    records = [record("a", False, True, True), record("b", True, False, True), record("c", False, False, False)]
    m = ev.compute_metrics(records)
    assert [m[f"accuracy_t{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert m["delta_i_to_c_t2_t3"] == pytest.approx(1 / 3) and m["delta_c_to_i_t2_t3"] == 0
    groups = ev.grouped_metrics(hand_records(), "subject")
    assert groups["Algebra"]["accuracy_t1"] == pytest.approx(0.6) and groups["Geometry"]["n"] == 5


def test_results_table_in_percent():
    table = ev.results_table([("base", ev.compute_metrics(hand_records()))])
    assert "| Model | Accuracy@t1 | Accuracy@t2 | Δ(t1,t2) | Δ i→c | P(c@t2 ∣ i@t1) | Δ c→i | n |" in table
    assert "| base | 40.0 | 50.0 | 10.0 | 20.0 | 33.3 | 10.0 | 10 |" in table


def eval_config(tmp_path: Path, model: Path, data: Path, *overrides: str):
    return load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"eval.model={model}",
            f"eval.source={data}",
            f"train.output_dir={tmp_path / 'runs'}",
            "eval.max_new_tokens=6",
            "eval.max_problems=6",
            "prompts.first_turn=Solve.",
            "prompts.correction=Again.",
            *overrides,
        ],
    )


def test_evaluate_tiny_model_end_to_end_and_resume(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    cfg = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.batch_size=4")
    out = ev.evaluate(cfg)
    assert out == tmp_path / "runs" / "base-model" / "eval" / "math_k2"
    for name in ("generations.jsonl", "metrics.json", "results.md", "accuracy.png"):
        assert (out / name).is_file(), name
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(len(json.loads(line)["attempts"]) == 2 for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and set(metrics["by_level"]) and set(metrics["by_subject"])
    assert "Accuracy@t1" in (out / "results.md").read_text()
    assert "P(right at t2 | wrong at t1)" in (out / "results.md").read_text()
    assert 0 <= metrics["edit_distance"] <= 1 and "answer_changed" in metrics

    # An interruption mid-write: three whole records and one cut short. Only the missing three are redone.
    (out / "generations.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    generated = counting_generations(monkeypatch)
    ev.evaluate(cfg)
    assert sorted(generated) == sorted(json.loads(line)["id"] for line in lines[3:])
    assert json.loads((out / "metrics.json").read_text()) == metrics  # greedy: the same numbers
    assert len(ev.read_generations(out / "generations.jsonl")) == 6  # the cut line is gone, not merged

    with pytest.raises(ScoreError, match=r"other settings \(eval.max_new_tokens 6 -> 7\); choose another eval.name"):
        ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.max_new_tokens=7"))


def counting_generations(monkeypatch) -> list[str]:
    """The ids of the problems evaluate generates from here on."""
    generated: list[str] = []
    real = ev.generate_rollouts

    def counting(model, tokenizer, problems, *args, **kwargs):
        generated.extend(p.id for p in problems)
        return real(model, tokenizer, problems, *args, **kwargs)

    monkeypatch.setattr(ev, "generate_rollouts", counting)
    return generated


def test_changed_weights_are_evaluated_again(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch, capsys):
    # The same model folder rewritten with other weights (a run trained further): nothing of the old model is reused.
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "final"))
    cfg = eval_config(tmp_path, model_dir, sample_jsonl, "eval.max_problems=3")
    out = ev.evaluate(cfg)
    before = (out / "generations.jsonl").read_text()
    generated = counting_generations(monkeypatch)
    ev.evaluate(cfg)
    assert generated == []  # unchanged weights and settings: reused

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    model.save_pretrained(model_dir)
    assert ev.evaluate(cfg) == out
    assert len(generated) == 3
    assert f"the files of {model_dir} changed" in capsys.readouterr().out
    (aside,) = out.parent.glob(f"{out.name}.superseded-*")
    assert (aside / "generations.jsonl").read_text() == before  # the old results are kept aside, not lost
    assert (out / "generations.jsonl").read_text() != before


def test_changed_engine_is_refused_naming_it(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    cfg = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.max_problems=2")
    out = ev.evaluate(cfg)
    monkeypatch.setattr(ev, "resolve_engine_name", lambda name: "vllm")
    changes = r"\(rollout.engine hf -> vllm, rollout.hf_compile auto -> None\); choose another eval.name$"
    with pytest.raises(ScoreError, match=rf"^{out} holds an evaluation with other settings {changes}"):
        ev.evaluate(cfg)


def test_evaluation_checks_the_context_before_generating(
    tmp_path, tiny_model_dir, sample_jsonl, sample_rows, monkeypatch
):
    def no_generation(*args, **kwargs):
        raise AssertionError("generated before the context check")

    monkeypatch.setattr(ev, "generate_rollouts", no_generation)
    with pytest.raises(ScoreError, match=r"2 attempts x eval.max_new_tokens=100000 .* context is 4096 tokens"):
        ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.max_new_tokens=100000"))
    giant = tmp_path / "giant.jsonl"  # one problem far longer than the model's context
    giant.write_text(json.dumps({**sample_rows[0], "problem": "What is 1 + 1? " * 2000}) + "\n")
    with pytest.raises(
        ScoreError,
        match=r"may need \d{5} tokens .* eval.max_new_tokens=6 plus .* instructions, \d{5}\) .* context is 4096",
    ):
        ev.evaluate(eval_config(tmp_path, tiny_model_dir, giant))


def test_empty_eval_source_never_evaluates_on_a_training_file(tmp_path, tiny_model_dir, sample_jsonl):
    cfg = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.source=", f"data.source={sample_jsonl}")
    with pytest.raises(ScoreError, match=rf"^eval.source is empty and data.source {sample_jsonl} is a single file"):
        ev.evaluate(cfg)


def test_compare_table_and_missing_compare(tmp_path, tiny_model_dir, sample_jsonl):
    first = ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.attempts=3", "eval.name=three"))
    assert "accuracy_t3" in json.loads((first / "metrics.json").read_text())
    second = ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, f"eval.compare=[{first}]"))
    table = (second / "results.md").read_text().split("\n\n")[1].splitlines()
    assert len(table) == 4  # header, rule, the compared evaluation, this one
    assert table[2].endswith(" 6 |") and table[3].endswith(" 6 |")
    with pytest.raises(ScoreError, match="metrics.json"):
        ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, f"eval.compare=[{tmp_path / 'nope'}]"))


def test_training_plot(tmp_path):
    rows = [
        {"step": s, "stage": 1 if s <= 2 else 2, "reward_t1": 0.1 * s, "reward_t2": 0.2, "kl_t1": 0.0, "kl_t2": 0.01}
        for s in range(1, 5)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ev.plot_training(tmp_path / "metrics.jsonl", tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 1000


def test_no_trained_run_is_a_clear_error(tmp_path, sample_jsonl):
    cfg = load_config(None, [f"train.output_dir={tmp_path}", f"eval.source={sample_jsonl}"])
    with pytest.raises(ScoreError, match="eval.model"):
        ev.evaluate(cfg)


def test_sampled_evaluation_scaling_and_resume(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    cfg = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.samples=4", "eval.max_problems=3")
    out = ev.evaluate(cfg)
    sampled = json.loads((out / "metrics.json").read_text())["sampled"]
    assert (sampled["n"], sampled["problems"], sampled["attempts"], sampled["seed"]) == (4, 3, 2, 0)
    assert set(sampled["pass_at_k_t1"]) == set(sampled["majority_at_k_t2"]) == {"1", "2", "3", "4"}
    assert set(sampled["equal_budget"]) == {"2", "4"}
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)["samples"]) == 4 for line in lines)
    assert "Equal budget" in (out / "results.md").read_text()
    assert (out / "scaling.png").stat().st_size > 1000
    # The scaling numbers are those of the stored samples.
    from score.scaling import sampled_metrics

    records = [json.loads(line)["samples"] for line in lines]
    assert json.loads(json.dumps(sampled_metrics(records)))["pass_at_k_t2"] == sampled["pass_at_k_t2"]

    # Seeded: the same seed samples the same conversations; a finished evaluation generates nothing more.
    again = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.samples=4", "eval.max_problems=3", "eval.name=b")
    assert (ev.evaluate(again) / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()
    monkeypatch.setattr(ev, "generate_rollouts", None)
    ev.evaluate(cfg)
    with pytest.raises(ScoreError, match=r"sampled conversations with other settings \(eval.seed 0 -> 1\)"):
        ev.evaluate(
            eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.samples=4", "eval.max_problems=3", "eval.seed=1")
        )
    # Conversations drawn under another rollout.top_p are not taken for these (they were, before issue 26).
    with pytest.raises(ScoreError, match=r"sampled conversations with other settings \(rollout.top_p 1.0 -> 0.5\)"):
        ev.evaluate(
            eval_config(
                tmp_path, tiny_model_dir, sample_jsonl, "eval.samples=4", "eval.max_problems=3", "rollout.top_p=0.5"
            )
        )


@pytest.mark.parametrize("extraction, correct, answer", [("strict", False, None), ("lenient", True, "19")])
def test_evaluation_grades_with_the_configured_extraction(monkeypatch, extraction, correct, answer):
    # A model not trained on the format states its answer in prose; only lenient extraction reads it.
    def rollout(model, tokenizer, problems, *args, reward_fn, **kwargs):
        texts = ["19 people attended."] * len(problems)
        rewards = torch.tensor([reward_fn(texts, problems)]).T
        return SimpleNamespace(texts=[[t] for t in texts], rewards=rewards, truncated=torch.zeros_like(rewards))

    monkeypatch.setattr(ev, "generate_rollouts", rollout)
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [f"grader.extraction={extraction}", "eval.attempts=1"])
    problem = Problem(id="p", problem="How many?", solution="", answer="19", subject="Algebra", level=1)
    (records,) = ev.generate_records(None, None, [problem], cfg)
    assert records[0]["attempts"][0]["correct"] is correct
    assert records[0]["attempts"][0]["answer"] == answer


def test_two_processes_split_the_problems_and_match_one(tmp_path, tiny_model_dir, sample_jsonl):
    # 2 gloo processes each generate half of the problems; the main process writes the same records and
    # metrics as a single process (batch size 1, so padding cannot change a greedy generation).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launchers = {
        "one": [sys.executable],
        "two": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        + ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
    }
    outputs = {}
    for name, launcher in launchers.items():
        sets = [f"eval.model={tiny_model_dir}", f"eval.source={sample_jsonl}", f"train.output_dir={tmp_path}"]
        sets += ["eval.max_new_tokens=6", "eval.max_problems=7", "eval.batch_size=1", f"eval.name={name}"]
        command = [*launcher, str(REPO_ROOT / "code" / "main.py"), "--task", "evaluate"]
        command += ["--config", str(REPO_ROOT / "configs" / "tiny.yaml")] + [a for s in sets for a in ("--set", s)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("results:") == 1  # one writer
        outputs[name] = tmp_path / "base-model" / "eval" / name
    one, two = (ev.read_generations(outputs[n] / "generations.jsonl") for n in ("one", "two"))
    assert len(one) == 7 and one == two
    metrics = [json.loads((outputs[n] / "metrics.json").read_text()) for n in ("one", "two")]
    assert metrics[0] == metrics[1]


def test_a_run_inside_an_experiment_keeps_its_own_evaluations(tmp_path):
    # saved_models/<experiment>/<run>/final evaluates into <run>/eval, not <experiment>/eval; a stage-end model into
    # a folder of its own there (the default evaluation name would be the final model's)
    output = tmp_path / "runs"
    for run in ("exp/score_seed0", "exp/score_seed1", "plain"):
        (output / run).mkdir(parents=True)
        (output / run / "metrics.jsonl").write_text("")
    for model in (
        "exp/score_seed0/final",
        "exp/score_seed1/final",
        "exp/score_seed1/stage_ends/round1_stage1",
        "plain/final",
    ):
        (output / model).mkdir(parents=True)
        (output / model / "config.json").write_text("{}")
    cfg = load_config(None, [f"train.output_dir={output}"])
    for model, root in (
        ("exp/score_seed0/final", "exp/score_seed0/eval"),
        ("exp/score_seed1/final", "exp/score_seed1/eval"),
        ("exp/score_seed1/stage_ends/round1_stage1", "exp/score_seed1/eval/stage_ends-round1_stage1"),  # apart
        ("plain/final", "plain/eval"),
    ):
        cfg.eval.model = str(output / model)
        assert ev.choose_model(cfg) == (output / model, output / root)


def test_a_code_attempts_line_keeps_the_judges_outcome():
    from types import SimpleNamespace

    import torch
    from score.data import Problem
    from score.evaluate import generation_record

    problem = Problem("c", "Write f.", "", "", "mbpp", 1, "code", "assert f() == 1\n")
    rollout = SimpleNamespace(texts=[["def f(): return 2", "def f(): return 1"]], rewards=torch.tensor([[0.0, 1.0]]),
                              truncated=torch.tensor([[False, False]]))  # fmt: skip
    statuses = {
        ("c", "def f(): return 2"): "failed (AssertionError at tests line 1)",
        ("c", "def f(): return 1"): "passed",
    }
    record = generation_record(problem, rollout, 0, "strict", statuses)
    assert [a["outcome"] for a in record["attempts"]] == ["failed (AssertionError at tests line 1)", "passed"]
    math = Problem("m", "1+1?", "", "2", "Algebra", 1)
    assert "outcome" not in generation_record(math, rollout, 0)["attempts"][0]


def test_a_full_disk_is_one_line_and_the_evaluation_resumes_once_there_is_space(
    tmp_path, tiny_model_dir, sample_jsonl, monkeypatch
):
    cfg = eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.batch_size=2")
    root = tmp_path / "runs" / "base-model" / "eval"

    class FullDisk:  # os for the lock file: every write fails as on a full disk
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(locks, "os", FullDisk())
        with pytest.raises(ScoreError, match=f"^cannot write to {root}: No space left on device$"):
            ev.evaluate(cfg)

    real_open = Path.open

    def full_disk(path, mode="r", *args, **kwargs):  # appending to generations.jsonl fills the disk
        if path.name == "generations.jsonl" and mode == "a":
            return real_open(Path("/dev/full"), "a")
        return real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", full_disk)
        with pytest.raises(ScoreError, match=f"^cannot write to {root / 'math_k2'}: No space left on device$"):
            ev.evaluate(cfg)
    assert ev.evaluate(cfg) == root / "math_k2"  # space again: it carries on
    assert len(ev.read_generations(root / "math_k2" / "generations.jsonl")) == 6


def test_the_progress_bar_shows_the_running_accuracy(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    def records(accelerator, model, todo, cfg):  # the first batch right at t1, the second wrong
        for start, right in ((0, True), (2, False)):
            attempts = [{"text": "x", "answer": None, "correct": right, "truncated": False}] * 2
            yield [{"id": p.id, "subject": p.subject, "level": p.level, "gold": p.answer, "attempts": attempts}
                   for p in todo[start : start + 2]]  # fmt: skip

    shown = []

    class Bar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def set_postfix(self, refresh, **values):
            shown.append(values["acc_t1"])

        def update(self, n):
            pass

    monkeypatch.setattr(ev, "shared_records", records)
    monkeypatch.setattr(ev, "progress", lambda **kwargs: Bar())
    ev.evaluate(eval_config(tmp_path, tiny_model_dir, sample_jsonl, "eval.batch_size=2", "eval.max_problems=4"))
    assert shown == ["1.000", "0.500"]  # 2 of the 4 so far, not the last batch's 0 of 2


def test_no_test_problems_names_the_filters_only_when_set(tmp_path, tiny_model_dir, sample_jsonl):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ScoreError, match=rf"^no test problems in {empty}$"):
        ev.evaluate(eval_config(tmp_path, tiny_model_dir, empty))
    with pytest.raises(ScoreError, match="after the data.subjects/data.levels filters$"):
        ev.evaluate(
            eval_config(tmp_path, tiny_model_dir, sample_jsonl, "data.subjects=[Prealgebra]", "data.levels=[5]")
        )
