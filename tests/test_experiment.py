import json

import pytest
from score import experiment
from score.config import REPO_ROOT, ScoreError, load_config


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


def test_summary_mean_and_std_by_hand():
    runs = [dict.fromkeys(experiment.METRICS, v) for v in (0.2, 0.4, 0.6)]
    summary = experiment.summarise({"score": runs, "base": runs[:1]})
    assert summary["score"]["accuracy_t1"] == pytest.approx(0.4)
    assert summary["score"]["accuracy_t1_std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert summary["base"]["delta_std"] == 0.0 and summary["base"]["seeds"] == 1
    table = experiment.summary_table(summary)
    assert "| SCoRe (Stage I + Stage II) | 40.0 ± 20.0 |" in table


def test_unknown_row_is_a_config_error():
    with pytest.raises(ScoreError, match="experiment.rows"):
        load_config(None, ["experiment.rows=[base, star]"])


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
            "experiment.rows=[base, stage2_no_shaping, score]",
        ],
    )
    folder = experiment.run_experiment(cfg)
    results = json.loads((folder / "results.json").read_text())
    assert set(results["summary"]) == {"base", "stage2_no_shaping", "score"}
    assert [len(results["runs"][r]) for r in ("base", "stage2_no_shaping", "score")] == [1, 2, 2]
    for row in ("stage2_no_shaping", "score"):
        for seed in (0, 1):
            stages = [json.loads(line)["stage"] for line in (folder / f"{row}_seed{seed}" / "metrics.jsonl").open()]
            assert stages == ([1, 2] if row == "score" else [2, 2])
    assert "± " in (folder / "results.md").read_text()
    assert (folder / "curves.png").stat().st_size > 1000
    # A second call reuses the finished runs and evaluations and gives the same table.
    assert experiment.run_experiment(cfg) == folder
    assert json.loads((folder / "results.json").read_text())["summary"] == results["summary"]
