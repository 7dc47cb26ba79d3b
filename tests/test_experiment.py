import copy
import json
import math

import pytest
from score import experiment
from score.config import REPO_ROOT, SUPERVISED_ROWS, ScoreError, load_config


def test_rows_share_the_step_budget(tmp_path):
    cfg = load_config(None, ["train.stage1_steps=3", "train.stage2_steps=5", "train.rounds=2"])
    direct = experiment.row_config(cfg, "stage2_no_shaping", 1, tmp_path)
    assert (direct.train.stage1_steps, direct.train.stage2_steps, direct.train.rounds) == (0, 16, 1)
    assert direct.train.alpha == 0 and direct.train.seed == 1 and direct.train.run_name == "stage2_no_shaping_seed1"
    shaped = experiment.row_config(cfg, "stage2_shaping", 0, tmp_path)
    assert shaped.train.stage2_steps == 16 and shaped.train.alpha == cfg.train.alpha
    score = experiment.row_config(cfg, "score", 2, tmp_path)
    assert (score.train.stage1_steps, score.train.stage2_steps, score.train.rounds) == (3, 5, 2)
    assert cfg.train.run_name == "score" and cfg.train.seed == 0  # the experiment's own config is untouched
    single = experiment.row_config(cfg, "single_turn", 0, tmp_path)
    assert (single.train.attempts, single.train.stage2_steps, single.eval.attempts) == (1, 16, 2)
    star2 = experiment.row_config(cfg, "score_star_stage2", 0, tmp_path)
    assert (star2.train.stage1_steps, star2.train.stage2_steps, star2.train.rounds) == (6, 0, 1)
    assert star2.train.run_name == "score_star_stage2_seed0_stage1"
    assert star2.eval.model == str(tmp_path / "score_star_stage2_seed0" / "final")  # the STaR model after it
    refine = experiment.untrained_config(cfg, "self_refine", tmp_path)
    assert refine.prompts.correction == cfg.prompts.self_refine != cfg.prompts.correction
    assert refine.eval.model == "base" and refine.eval.name == "self_refine"


def test_baseline_rows_name_their_dataset(tmp_path, monkeypatch):
    cfg = load_config(None, ["sft.dataset=d_plus", "experiment.rows=[star, star_plus, pair_sft, pair_sft_plus]"])
    called = []
    monkeypatch.setattr(experiment, "resolve_model_path", lambda name, base_dir: "base")
    monkeypatch.setattr(experiment, "run_star", lambda run, root, start: called.append(("star", run.sft.dataset)))
    monkeypatch.setattr(experiment, "run_pair_sft", lambda run, root, base: called.append(("pair", run.sft.dataset)))
    monkeypatch.setattr(experiment, "write_run_card", lambda run, final, supervised, start: None)
    for row in cfg.experiment.rows:
        experiment.run_row(cfg, row, 0, tmp_path)
    assert called == [("star", "d"), ("star", "d_plus"), ("pair", "d"), ("pair", "d_plus")]
    # Stage I then STaR learns on the configured dataset.
    assert experiment.row_config(cfg, "score_star_stage2", 0, tmp_path).sft.dataset == "d_plus"
    assert set(SUPERVISED_ROWS) >= {"star", "star_plus", "pair_sft", "pair_sft_plus"}
    with pytest.raises(ScoreError, match="sft.dataset"):
        load_config(None, ["sft.dataset=d_star"])


def test_summary_mean_and_std_by_hand():
    runs = [dict.fromkeys(experiment.METRICS, v) for v in (0.2, 0.4, 0.6)]
    summary = experiment.summarise({"score": runs, "base": runs[:1]})
    assert summary["score"]["accuracy_t1"] == pytest.approx(0.4)
    assert summary["score"]["accuracy_t1_std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert summary["base"]["delta_std"] is None and summary["base"]["seeds"] == 1  # one seed: no spread measured
    table = experiment.summary_table(summary)
    assert "| SCoRe (Stage I + Stage II) | 40.0 ± 20.0 |" in table
    assert "| Base model | 20.0 | 20.0 |" in table  # not "20.0 ± 0.0", which would read as a measured spread


def test_paired_differences_by_hand():
    # differences 0.1, 0.3, 0.2: mean 0.2, sample sd 0.1, half width t(0.975, 2) * 0.1 / sqrt(3)
    mean, low, high = experiment.paired_difference([0.5, 0.7, 0.6], [0.4, 0.4, 0.4])
    half = 4.303 * 0.1 / 3**0.5
    assert (mean, low, high) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    # Paired by seed: a constant shift has no spread, whatever the spread of the rows themselves.
    assert experiment.paired_difference([0.1, 0.9, 0.5], [0.0, 0.8, 0.4]) == pytest.approx((0.1, 0.1, 0.1))
    # An untrained row's one value stands for every seed; one seed has no interval.
    # differences 0.2, 0.0: mean 0.1, sample sd 0.1 * sqrt(2), half width t(0.975, 1) * 0.1
    assert experiment.paired_difference([0.3], [0.1, 0.3]) == pytest.approx((0.1, 0.1 - 1.2706, 0.1 + 1.2706))
    mean, low, high = experiment.paired_difference([0.4], [0.1])
    assert mean == pytest.approx(0.3) and math.isnan(low) and math.isnan(high)
    # P(right at t2 | wrong at t1) is None for a run with nothing wrong at t1: that seed drops out.
    assert experiment.paired_difference([0.5, None, 0.7], [0.4, 0.4, 0.6]) == pytest.approx((0.1, 0.1, 0.1))
    assert (
        experiment.summarise({"score": [{**dict.fromkeys(experiment.METRICS, 0.5), experiment.P_FIX: None}]})["score"][
            experiment.P_FIX
        ]
        is None
    )
    runs = {"score": [{k: 0.5 for k in experiment.METRICS}] * 2, "base": [{k: 0.2 for k in experiment.METRICS}]}
    assert "| Base model | -30.0 [-30.0, -30.0] |" in experiment.paired_table(runs, "score")


def test_unknown_row_is_a_config_error():
    with pytest.raises(ScoreError, match="experiment.rows"):
        load_config(None, ["experiment.rows=[base, stars]"])
    with pytest.raises(ScoreError, match="compare_to"):
        load_config(None, ["experiment.compare_to=nope"])


def test_short_experiment_end_to_end(tmp_path, tiny_model_dir, sample_jsonl):
    cfg = load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"model.name={tiny_model_dir}",
            f"data.source={sample_jsonl}",
            f"eval.source={sample_jsonl}",
            f"train.output_dir={tmp_path}",
            "prompts.first_turn=Solve.",
            "prompts.correction=Again.",
            "rollout.max_new_tokens=4",
            "eval.max_new_tokens=4",
            "eval.max_problems=4",
            "train.stage1_steps=1",
            "train.stage2_steps=1",
            "train.sample_every=0",
            "experiment.name=exp",
            "experiment.seeds=[0, 1]",
            "experiment.rows=[base, self_refine, star, pair_sft, single_turn, stage2_no_shaping, score, "
            "score_star_stage2]",
            "sft.rounds=2",
            "sft.steps=1",
            "sft.problems=2",
            "sft.batch_size=2",
            "sft.micro_batch_size=2",
        ],
    )
    folder = experiment.run_experiment(cfg)
    results = json.loads((folder / "results.json").read_text())
    rows = ["base", "self_refine", "star", "pair_sft", "single_turn", "stage2_no_shaping", "score", "score_star_stage2"]
    assert list(results["summary"]) == rows
    assert [len(results["runs"][r]) for r in rows] == [1, 1, 2, 2, 2, 2, 2, 2]
    for row in ("stage2_no_shaping", "score", "single_turn"):
        for seed in (0, 1):
            log = [json.loads(line) for line in (folder / f"{row}_seed{seed}" / "metrics.jsonl").open()]
            assert [r["stage"] for r in log] == ([1, 2] if row == "score" else [2, 2])
            assert ("reward_t2" in log[0]) == (row != "single_turn")
    for seed in (0, 1):
        stages = [
            json.loads(line)["stage"]
            for line in (folder / f"score_star_stage2_seed{seed}_stage1" / "metrics.jsonl").open()
        ]
        assert stages == [1]  # Stage I by REINFORCE, then STaR:
        star = [
            json.loads(line)["stage"] for line in (folder / f"score_star_stage2_seed{seed}" / "metrics.jsonl").open()
        ]
        assert star.count("sample") == 2
    # Self-Refine is the base model evaluated with its own second turn.
    refine = (folder / "base-model" / "eval" / "self_refine" / "generations.jsonl").read_text()
    assert refine != (folder / "base-model" / "eval" / "math_k2" / "generations.jsonl").read_text()
    report = (folder / "results.md").read_text()
    assert (
        "± " in report and "| Pair-SFT (D: wrong, right) | " in report and "Row − SCoRe (Stage I + Stage II)" in report
    )
    assert (folder / "curves.png").stat().st_size > 1000
    # A second call reuses the finished runs and evaluations and gives the same table.
    assert experiment.run_experiment(cfg) == folder
    assert json.loads((folder / "results.json").read_text())["summary"] == results["summary"]
    # The same folder with another learning rate would mix runs of two settings: one error line names it.
    other = copy.deepcopy(cfg)
    other.train.lr *= 2
    with pytest.raises(ScoreError, match=r"other settings: train\.lr"):
        experiment.run_experiment(other)


def test_supervised_rows_refuse_a_multi_process_launch(tmp_path, monkeypatch):
    # STaR and Pair-SFT fine-tune in one process: under a launcher every process would run its own copy.
    class TwoProcesses:
        num_processes, is_main_process = 2, True

        def __init__(self, cpu: bool):
            pass

    monkeypatch.setattr(experiment, "PartialState", TwoProcesses)
    cfg = load_config(None, [f"train.output_dir={tmp_path}", "experiment.rows=[base,star,score]"])
    with pytest.raises(ScoreError, match=r"\['star'\].*2 processes"):
        experiment.run_experiment(cfg)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_compare_to_naming_no_row_is_one_error_line(tmp_path):
    cfg = load_config(None, [f"train.output_dir={tmp_path}", "experiment.rows=[base,stage2_shaping]"])
    with pytest.raises(ScoreError, match=r"^experiment.compare_to=score is not one of experiment.rows \(base, stage2"):
        experiment.run_experiment(cfg)
    assert not any(tmp_path.iterdir())  # refused before anything was written
