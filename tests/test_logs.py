"""Experiment trackers (train.report_to): each package used for real, offline or on local files, and read back."""

import json
import subprocess
import sys

import pytest
from accelerate import tracking
from score.checkpoints import RunFiles, changed_settings
from score.config import ScoreError, load_config
from score.data import Problem
from score.logs import (
    HELDOUT_TABLE,
    TRACKER_RUNS,
    MetricsLogger,
    heldout_table,
    text_diagnostics,
    tracker_values,
    tracker_warning,
)
from score.trainer import train
from test_trainer import contains, crash_in_step, metrics, tiny_config

ALL = "train.report_to=[tensorboard,wandb,trackio,mlflow]"
WATCHED = ["train.stage1_steps=2", "train.stage2_steps=2", "train.eval_every=2", "train.eval_problems=3",
           "eval.max_new_tokens=4"]  # fmt: skip


@pytest.fixture(autouse=True)
def offline_trackers(tmp_path, tmp_path_factory, monkeypatch):
    """Every tracker writes under tmp and nothing phones home. W&B reads its settings at the first run of the
    process, trackio TRACKIO_DIR when imported: folders for the session."""
    session = tmp_path_factory.getbasetemp()
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(session / "wandb_config"),
        "WANDB_CACHE_DIR": str(session / "wandb_cache"),
        "WANDB_DATA_DIR": str(session / "wandb_data"),
        "MLFLOW_TRACKING_URI": f"file:{tmp_path / 'mlruns'}",
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 keeps the file store behind this switch
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "TRACKIO_DIR": str(session / "trackio"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }.items():
        monkeypatch.setenv(name, value)


def expected_scalars(run) -> dict[tuple[str, int], float]:
    """What every tracker should hold: (tag, step) -> value of each number in metrics.jsonl."""
    return {(tag, r["step"]): value for r in metrics(run) for tag, value in tracker_values(r).items()}


def wandb_records(run) -> list[list[dict]]:
    """The records of each offline W&B run file in the run folder (oldest first), read by W&B's own reader."""
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    outputs = [
        subprocess.run([*inspect, str(f)], capture_output=True, text=True, check=True, timeout=120) for f in files
    ]
    return [[json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")] for out in outputs]


def wandb_scalars(records: list[dict]) -> dict[tuple[str, int], float]:
    history = [r["history"] for r in records if r["type"] == "history"]
    return {
        (key, h["step"]["num"]): value
        for h in history
        for key, value in h["item"].items()
        if not key.startswith(("_", HELDOUT_TABLE)) and isinstance(value, (int, float))  # not the table's size
    }


def mlflow_run(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return client, client.get_run(json.loads((run / TRACKER_RUNS).read_text())["mlflow"])


def mlflow_scalars(client, mlflow_run) -> dict[tuple[str, int], float]:
    return {
        (tag, m.step): m.value
        for tag in mlflow_run.data.metrics
        for m in client.get_metric_history(mlflow_run.info.run_id, tag)
    }


def trackio_logs(run_name: str) -> list[dict]:
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs("score", run_name)


def trackio_scalars(logs: list[dict]) -> dict[tuple[str, int], float]:
    return {
        (key, log["step"]): value
        for log in logs
        for key, value in log.items()
        if key.startswith(("train/", "heldout/")) and isinstance(value, (int, float))
    }


def tensorboard_scalars(run) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def test_tracker_values_are_the_numbers_of_a_record(tmp_path):
    record = {"step": 3, "stage": 2, "loss": 0.5, "skipped": "non-finite loss", "p_t2_right_given_t1_wrong": None}
    assert tracker_values(record) == {"train/stage": 2, "train/loss": 0.5}
    assert tracker_values({"step": 2, "heldout_accuracy_t1": 0.25}) == {"heldout/accuracy_t1": 0.25}
    lines = [{"step": 0, "heldout_n": 3, "heldout_accuracy_t1": 0.0}, {"step": 1, "loss": 0.1},
             {"step": 2, "heldout_n": 3, "heldout_accuracy_t1": 1 / 3}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert heldout_table(tmp_path / "metrics.jsonl") == (["step", "n", "accuracy_t1"], [[0, 3, 0.0], [2, 3, 1 / 3]])
    assert heldout_table(tmp_path / "absent.jsonl") == (["step"], [])


def test_answer_changed_reads_programs_of_code_answers_and_answers_of_math():
    # Training's answer_changed graded programs with the MATH extractor: always "unchanged" on code (issue 26).
    code = Problem("c", "Write f.", "", "", "mbpp", 1, domain="code", tests="assert f() == 2")
    math = Problem("m", "1+1?", "", "2", "Algebra", 1)
    fence = "```python\ndef f():\n    return {}\n```"
    texts = [[fence.format(1), fence.format(2)], [fence.format(1), fence.format(1)], ["$\\boxed{1}$", "$\\boxed{2}$"]]
    changed, _, compared = text_diagnostics(texts, [code, code, math], "strict").tolist()
    assert (changed, compared) == (2, 3)


def test_report_to_names_known_trackers_and_changes_no_result():
    assert load_config().train.report_to == ["tensorboard"]
    with pytest.raises(ScoreError, match=r"train.report_to .*'neptune'.*known: tensorboard, wandb, trackio, mlflow"):
        load_config(None, ["train.report_to=[wandb,neptune]"])
    with pytest.raises(ScoreError, match="train.report_to .*expected a list"):
        load_config(None, ["train.report_to=wandb"])
    # A resume may change the trackers: they change nothing the steps compute.
    assert changed_settings(load_config(), load_config(None, ["train.report_to=[]"])) == []


def test_every_tracker_holds_what_metrics_jsonl_holds(tmp_path, tiny_model_dir, sample_jsonl):
    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, ALL, "train.run_name=tracked", *WATCHED)
    run = train(cfg, contains("y"))
    expected = expected_scalars(run)
    assert ("train/loss", 4) in expected and ("heldout/accuracy_t1", 0) in expected
    columns, rows = heldout_table(run / "metrics.jsonl")
    assert [row[0] for row in rows] == [0, 2, 4]
    table = [pytest.approx(dict(zip(columns, row, strict=True))) for row in rows]  # one per evaluation

    (records,) = wandb_records(run)
    assert wandb_scalars(records) == pytest.approx(expected)
    config = {k: v for r in records if r["type"] == "config" for k, v in r["config"]["update"].items()}
    assert config["train.lr"] == cfg.train.lr and config["train.report_to"] == str(cfg.train.report_to)
    (table_file,) = (run / "wandb").glob("offline-run-*/files/media/table/heldout/evaluations*.table.json")
    written = json.loads(table_file.read_text())
    assert [dict(zip(written["columns"], row, strict=True)) for row in written["data"]] == table

    client, mlflow_run_ = mlflow_run(run)
    assert mlflow_scalars(client, mlflow_run_) == pytest.approx(expected)
    assert mlflow_run_.data.params["train.lr"] == str(cfg.train.lr) and mlflow_run_.info.run_name == "tracked"
    artifact = client.download_artifacts(mlflow_run_.info.run_id, "heldout/evaluations.json", str(tmp_path))
    written = json.loads(open(artifact).read())
    assert [dict(zip(written["columns"], row, strict=True)) for row in written["data"]] == table

    logs = trackio_logs("tracked")
    assert trackio_scalars(logs) == pytest.approx(expected)
    (logged_table,) = [log["heldout/evaluations"] for log in logs if "heldout/evaluations" in log]
    assert logged_table["_value"] == table
    from trackio.sqlite_storage import SQLiteStorage

    assert SQLiteStorage.get_run_config("score", "tracked")["train.lr"] == cfg.train.lr

    assert tensorboard_scalars(run) == pytest.approx(expected)  # float32 events, within approx's 1e-6
    (hparams,) = (run / "tensorboard").glob("*/hparams.yml")
    assert "train.lr: " in hparams.read_text()


def test_a_resumed_run_continues_its_tracker_runs(tmp_path, tiny_model_dir, sample_jsonl):
    overrides = [ALL, "train.run_name=resumed", "train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2"]
    with pytest.raises(KeyboardInterrupt):  # steps 1-3 logged, the checkpoint at step 2
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides), crash_in_step(4, contains("y")))
    import mlflow
    import wandb

    wandb.finish(exit_code=1)  # what the crashed process's exit does to its open runs (trackio: the next init)
    mlflow.end_run("KILLED")
    first = json.loads((tmp_path / "runs" / "resumed" / TRACKER_RUNS).read_text())
    run = train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides, "train.resume=true"), contains("y"))
    assert json.loads((run / TRACKER_RUNS).read_text()) == first
    expected = expected_scalars(run)
    assert sorted({step for _, step in expected}) == [1, 2, 3, 4]

    # W&B: a second offline file of the same run id, with the steps after the checkpoint (`wandb sync` joins them)
    before, after = wandb_records(run)
    ids = {r["run"]["run_id"] for records in (before, after) for r in records if r["type"] == "run"}
    assert ids == {first["wandb"]}
    assert wandb_scalars(after) == pytest.approx({key: v for key, v in expected.items() if key[1] >= 3})
    # MLflow and trackio: one run; step 3 was logged twice (before the crash and again), the newest value is the run's
    client, mlflow_run_ = mlflow_run(run)
    assert mlflow_run_.info.run_id == first["mlflow"]
    assert {k: v for k, v in mlflow_scalars(client, mlflow_run_).items() if k[1] != 3} == pytest.approx(
        {k: v for k, v in expected.items() if k[1] != 3}
    )
    assert {key[1] for key in mlflow_scalars(client, mlflow_run_)} == {1, 2, 3, 4}
    logs = trackio_logs("resumed")
    newest = {}
    for log in logs:  # oldest first
        newest.update(trackio_scalars([log]))
    assert newest == pytest.approx(expected)
    assert tensorboard_scalars(run) == pytest.approx(expected)


def test_a_tracker_that_fails_to_start_is_one_warning(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch, capfd):
    def unreachable(self):
        raise ConnectionError("api.wandb.ai unreachable\nretrying gave up")

    monkeypatch.setattr(tracking.WandBTracker, "start", unreachable)
    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.report_to=[wandb,tensorboard]")
    run = train(cfg, contains("y"))
    warnings = [line for line in capfd.readouterr().err.splitlines() if "report_to" in line]
    assert warnings == [
        "warning: train.report_to wandb: start failed (ConnectionError: api.wandb.ai unreachable); "
        "the run goes on without it"
    ]
    assert [r["step"] for r in metrics(run)] == list(range(1, 7))
    assert tensorboard_scalars(run) == pytest.approx(expected_scalars(run))
    assert json.loads((run / TRACKER_RUNS).read_text()) == {"tensorboard": "tensorboard"}


def test_a_tracker_that_fails_to_log_is_dropped_with_one_warning(tmp_path, monkeypatch, capfd):
    calls = []

    def full_disk(self, values, step=None):
        calls.append(step)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.MLflowTracker, "log", full_disk)
    cfg = load_config(None, ["train.report_to=[mlflow]", f"train.output_dir={tmp_path}"])
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    logger = MetricsLogger(files, cfg, enabled=True)
    for step in (1, 2):
        logger.log({"step": step, "loss": 0.5})
    logger.close()
    assert calls == [1] and len(metrics(files.root)) == 2
    warnings = [line for line in capfd.readouterr().err.splitlines() if "report_to" in line]
    assert warnings == [
        "warning: train.report_to mlflow: log failed (OSError: [Errno 28] No space left on device); "
        "the run goes on without it"
    ]


def test_a_missing_package_is_one_warning_naming_it(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio raises ImportError
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    logger = MetricsLogger(files, load_config(None, ["train.report_to=[trackio]"]), enabled=True)
    logger.log({"step": 1, "loss": 0.5})
    logger.close()
    (warning,) = [line for line in capfd.readouterr().err.splitlines() if "report_to" in line]
    assert warning.startswith("warning: train.report_to trackio: start failed (ModuleNotFoundError: ")
    assert warning.endswith("; pip install trackio; the run goes on without it")
    assert logger.trackers == {} and len(metrics(files.root)) == 1


@pytest.mark.parametrize("damaged", ['{"wandb": ', '["wandb"]', '{"wandb": 7}', "\udcff"])
def test_a_damaged_tracker_runs_file_is_one_warning_and_new_runs(tmp_path, capfd, damaged):
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    (files.root / TRACKER_RUNS).write_bytes(damaged.encode(errors="surrogateescape"))
    logger = MetricsLogger(files, load_config(None, ["train.report_to=[tensorboard]"]), enabled=True, purge_step=3)
    logger.close()
    err = capfd.readouterr().err.splitlines()
    assert err == [f"warning: {files.root / TRACKER_RUNS} is unreadable: the trackers start new runs"]
    assert json.loads((files.root / TRACKER_RUNS).read_text()) == {"tensorboard": "tensorboard"}


def test_only_the_main_process_starts_trackers(tmp_path):
    cfg = load_config(None, [ALL])
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    logger = MetricsLogger(files, cfg, enabled=False)
    logger.log({"step": 1, "loss": 0.5})
    logger.close()
    assert logger.trackers == {} and list(files.root.iterdir()) == []


def test_only_a_failed_mlflow_start_without_a_tracking_uri_asks_to_set_one(monkeypatch, capfd):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracker_warning("mlflow", "start", RuntimeError("no sqlalchemy"))
    tracker_warning("mlflow", "log", OSError(28, "No space left on device"))  # a store that worked: no hint
    start, log = capfd.readouterr().err.splitlines()
    assert start.endswith("(RuntimeError: no sqlalchemy); set MLFLOW_TRACKING_URI; the run goes on without it")
    assert log.endswith("(OSError: [Errno 28] No space left on device); the run goes on without it")
