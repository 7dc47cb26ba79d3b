"""Resume rules (settings, held-out split, schedule length, missing runs and configs), damaged checkpoints, and
write errors as one line."""

import errno
import json

import pytest
import torch
import yaml
from accelerate import Accelerator
from score import engines
from score.checkpoints import (
    RunFiles,
    changed_settings,
    check_experiment,
    check_resume,
    checkpoint_damage,
    load_checkpoint,
    save_checkpoint,
    writing,
)
from score.config import REPO_ROOT, ScoreError, load_config
from score.objectives import stage_schedule
from score.trainer import lr_factor

TINY = REPO_ROOT / "configs" / "tiny.yaml"


def tiny(*overrides: str):
    return load_config(TINY, list(overrides))


def test_a_changed_heldout_split_is_a_changed_setting():
    # eval_every decides whether eval_problems are held out of training: 0 -> 2 takes 4 of the 16 problems away
    assert changed_settings(tiny(), tiny("train.eval_every=2")) == ["train.eval_every (0 -> 2)"]
    assert changed_settings(tiny("train.eval_every=2"), tiny("train.eval_every=2", "train.eval_problems=3")) == [
        "train.eval_problems (4 -> 3)"
    ]
    # the same split evaluated at other steps, or an eval_problems that holds nothing out, changes nothing
    assert changed_settings(tiny("train.eval_every=2"), tiny("train.eval_every=3")) == []
    assert changed_settings(tiny(), tiny("train.eval_problems=3")) == []


def test_a_longer_schedule_keeps_the_past_learning_rates_or_is_refused():
    # stage2_steps 0 -> 3 under linear decay: the 3 steps taken ran at 1, 2/3, 1/3 of the lr, and a 6-step
    # schedule would have given them 1, 5/6, 4/6; the lr would jump back up at step 3. So it is refused.
    taken = [lr_factor(s, 3, 0, "linear") for s in range(3)]
    extended = [lr_factor(s, 6, 0, "linear") for s in range(3)]
    assert taken == pytest.approx([1, 2 / 3, 1 / 3]) and extended == pytest.approx([1, 5 / 6, 4 / 6])
    for schedule in ("linear", "cosine"):
        saved = tiny("train.stage2_steps=0", f"train.lr_schedule={schedule}")
        changed = changed_settings(saved, tiny("train.stage2_steps=3", f"train.lr_schedule={schedule}"))
        assert changed[0] == "train.stage2_steps (0 -> 3)" and f"lr_schedule={schedule}" in changed[1], changed
    # a constant lr (warm-up included: it does not depend on the total) extends, as before
    saved = tiny("train.stage2_steps=0", "train.warmup_steps=2")
    longer = tiny("train.stage2_steps=3", "train.warmup_steps=2")
    assert stage_schedule(longer)[:3] == stage_schedule(saved) and changed_settings(saved, longer) == []
    assert [lr_factor(s, 3, 2, "constant") for s in range(3)] == [lr_factor(s, 6, 2, "constant") for s in range(3)]


def test_resume_of_a_missing_run_says_so_and_starts_fresh(tmp_path, capsys):
    files = RunFiles(tmp_path / "nothing")
    assert check_resume(files, tiny("train.resume=true"), {}, main_process=True) is None
    # Not "train.resume=true, but": an experiment sets it for its runs, unseen by its user.
    assert capsys.readouterr().out == f"nothing to resume: {files.root} holds no run yet; training from scratch\n"
    files.root.mkdir()
    tiny().save(files.config)  # started, stopped before its first checkpoint
    assert check_resume(files, tiny("train.resume=true"), {}, main_process=True) is None
    assert f"nothing to resume: {files.checkpoints} holds no checkpoint yet;" in capsys.readouterr().out


def test_a_run_without_its_config_is_neither_resumed_nor_overwritten(tmp_path):
    files = RunFiles(tmp_path / "run")
    (files.checkpoints / "step_3").mkdir(parents=True)  # config.yaml and metrics.jsonl deleted
    with pytest.raises(ScoreError, match=r"config\.yaml is missing") as error:
        check_resume(files, tiny("train.resume=true", "train.lr=0.5"), {}, main_process=True)
    assert "\n" not in str(error.value)
    with pytest.raises(ScoreError, match="already holds a run"):
        check_resume(files, tiny("train.lr=0.5"), {}, main_process=True)


def save_two_checkpoints(files: RunFiles) -> tuple:
    """step_1 and step_2 of a small model as the trainer writes them; returns what load_checkpoint takes."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (1, 2):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
        save_checkpoint(accelerator, files, model, optimizer, scheduler, step, stage=1, keep=2)
    return accelerator, model, optimizer, scheduler


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "shard": (lambda c: truncate(next(c.glob("*.distcp"))), ".distcp"),
    "rng": (lambda c: truncate(c / "rng_0.pt"), "rng_0.pt"),
    "state": (lambda c: truncate(c / "trainer_state.json"), "trainer_state.json"),
    "metadata": (lambda c: (c / ".metadata").unlink(), ".metadata"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_named_and_the_previous_one_taken(tmp_path, capsys, damage):
    files = RunFiles(tmp_path / "run")
    save_two_checkpoints(files)
    cfg = tiny("train.resume=true")
    cfg.save(files.config)
    (files.root / "provenance.json").write_text("{}")  # what the run trained from: nothing to compare here
    files.metrics.write_text("")
    step1, step2 = files.finished_checkpoints()
    assert checkpoint_damage(step1) is None and checkpoint_damage(step2) is None
    damage_it, name = DAMAGE[damage]
    damage_it(step2)
    assert name in checkpoint_damage(step2)
    capsys.readouterr()
    assert check_resume(files, cfg, {}, main_process=True) == step1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "step_2 is damaged" in out and name in out, out
    damage_it(step1)
    with pytest.raises(ScoreError, match="no complete checkpoint") as error:
        check_resume(files, cfg, {}, main_process=True)
    assert "\n" not in str(error.value) and name in str(error.value)


def test_a_checkpoint_with_wrong_bytes_is_one_error_line(tmp_path):
    files = RunFiles(tmp_path / "run")
    accelerator, model, optimizer, scheduler = save_two_checkpoints(files)
    step2 = files.finished_checkpoints()[-1]
    shard = next(step2.glob("*.distcp"))
    shard.write_bytes(bytes(shard.stat().st_size))  # zeros: every file whole, the bytes wrong
    assert checkpoint_damage(step2) is None
    with pytest.raises(ScoreError, match=f"cannot load checkpoint {step2}, it is damaged") as error:
        load_checkpoint(accelerator, step2, model, optimizer, scheduler)
    assert "\n" not in str(error.value) and "move it aside" in str(error.value)


def test_write_errors_name_the_folder_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ScoreError, match=f"cannot write to {tmp_path}: No space left on device"):
        with writing(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
    # torch.distributed.checkpoint wraps what its writer raised (a BaseException, not even an Exception)
    files = RunFiles(tmp_path / "run")
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        if str(f).endswith(".pt") or hasattr(f, "write"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(ScoreError, match=f"cannot write to {files.checkpoints}: No space left on device"):
        save_two_checkpoints(files)
    assert files.finished_checkpoints() == []
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with writing(tmp_path):
            json.loads("{")


def test_an_experiment_recorded_before_the_baseline_settings_reads_them_as_it_ran(tmp_path):
    # Its STaR kept every trace right at attempt 2 (D+) and continued each round from the last.
    cfg = load_config(None, ["experiment.rows=[base, star_plus, score]"])
    cfg.save(tmp_path / "settings.yaml")
    record = yaml.safe_load((tmp_path / "settings.yaml").read_text())
    del record["sft"]["dataset"], record["sft"]["star_restart"]
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(record))
    # Rows that fine-tune nothing (make demo's) do not depend on sft.*: the new defaults are fine there.
    check_experiment(tmp_path, load_config(None, ["experiment.rows=[base, score]"]), main_process=True)
    with pytest.raises(ScoreError, match=r"sft\.dataset \('d_plus' -> 'd'\), sft\.star_restart \(False -> True\)"):
        check_experiment(tmp_path, cfg, main_process=True)
    cfg.sft.dataset, cfg.sft.star_restart = "d_plus", False
    check_experiment(tmp_path, cfg, main_process=True)
    # A record that has them is read as written.
    cfg.save(tmp_path / "settings.yaml")
    check_experiment(tmp_path, cfg, main_process=True)
    cfg.sft.dataset = "d"
    with pytest.raises(ScoreError, match=r"sft\.dataset \('d_plus' -> 'd'\)"):
        check_experiment(tmp_path, cfg, main_process=True)


def test_where_a_model_is_pushed_changes_no_result(tmp_path):
    # push.* decides where final/ is uploaded, not what it holds: a resume or an experiment may change it.
    pushed = ["push.repo=owner/name", "push.private=true"]
    assert changed_settings(tiny(), tiny(*pushed)) == []
    load_config(None, ["experiment.rows=[base, star, score]"]).save(tmp_path / "settings.yaml")
    check_experiment(tmp_path, load_config(None, ["experiment.rows=[base, star, score]", *pushed]), True)


@pytest.mark.parametrize("full", ["rng", "state"])
def test_a_disk_full_mid_checkpoint_is_one_line_leaves_no_tmp_and_keeps_the_older_ones(tmp_path, monkeypatch, full):
    files = RunFiles(tmp_path / "run")
    accelerator, model, optimizer, scheduler = save_two_checkpoints(files)
    before = {path: path.read_bytes() for path in files.checkpoints.rglob("*") if path.is_file()}
    if full == "rng":  # torch's own writer on a full disk: "RuntimeError: ... unexpected pos", no errno
        real_save = torch.save
        monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: real_save(obj, "/dev/full"))
    else:  # the last file of the checkpoint, trainer_state.json
        real_write_text = type(files.root).write_text

        def disk_full(path, *args, **kwargs):
            if path.name == "trainer_state.json":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write_text(path, *args, **kwargs)

        monkeypatch.setattr(type(files.root), "write_text", disk_full)
    with pytest.raises(ScoreError, match=f"cannot write to {files.checkpoints}: .*(disk|space)") as error:
        save_checkpoint(accelerator, files, model, optimizer, scheduler, 3, stage=1, keep=2)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in files.checkpoints.iterdir()) == ["step_1", "step_2"]  # no step_3.tmp
    assert {path: path.read_bytes() for path in files.checkpoints.rglob("*") if path.is_file()} == before


def test_resume_takes_the_engine_auto_resolved_to_by_its_name(monkeypatch):
    # Without vLLM, auto is hf: naming it is no change of engine (vllm would be).
    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    assert changed_settings(tiny("rollout.engine=auto"), tiny("rollout.engine=hf")) == []
    assert changed_settings(tiny("rollout.engine=hf"), tiny("rollout.engine=auto")) == []
    assert changed_settings(tiny("rollout.engine=hf"), tiny("rollout.engine=vllm")) == [
        "rollout.engine ('hf' -> 'vllm')"
    ]
