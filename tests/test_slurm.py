"""run.slurm on a real one-node Slurm (Debian's slurm-wlm 22.05 and munge) started for this test on 127.0.0.1.

Two jobs of the tiny config, one with 1 and one with 2 training processes. The first gets the time-limit
warning (USR1 to the batch shell, as `--signal=B:USR1@300` sends it) mid-run and must checkpoint and requeue
itself; the second is requeued from outside with `scontrol requeue` (SIGTERM to every process). Both must
resume from their checkpoint, finish, and evaluate their own run. A third job, of 1 process, has a 2-minute
limit: training reads the job's end time, stops with a checkpoint by itself, and the job requeues. Installing
the packages needs root and Debian's archive; where they cannot be installed the test prints one line and skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from score.config import REPO_ROOT

pytestmark = pytest.mark.slurm

STEPS = 30
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")


def install_slurm() -> str | None:
    """Install slurm-wlm and munge when missing; the reason when they cannot be had."""
    if all(shutil.which(name) for name in DAEMONS):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "needs root and apt-get to install slurm-wlm and munge"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    missing = [name for name in DAEMONS if not shutil.which(name)]
    return f"installed, but {missing} not found" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """munged, slurmctld and slurmd for one node, all state, sockets and logs in `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.processes: list[subprocess.Popen] = []
        self.partition = "scoretest"
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        for name in ("state", "spool", "munge"):
            (root / name).mkdir()

    def start(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge / "munge.socket"
        self.spawn(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        )
        self.wait_for(socket_path.exists, "munged's socket")
        self.write_config(socket_path)
        self.spawn("slurmctld", "-D", "-i")
        self.spawn("slurmd", "-D", "-N", self.node)
        self.wait_for(self.node_idle, "the node to be idle")

    def write_config(self, munge_socket: Path) -> None:
        # the machine's own CPUs and memory, as slurmd detects them
        detected = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        hardware = re.search(r"CPUs=.*RealMemory=\d+", detected).group(0)
        self.node = socket.gethostname()
        r = self.root
        (r / "slurm.conf").write_text(
            f"""ClusterName=scoretest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
KillWait=120
MinJobAge=3600
NodeName={self.node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def spawn(self, *command: str) -> None:
        log = (self.root / f"{command[0]}.stdout").open("w")
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for p in self.processes:
                if p.poll() is not None:
                    raise AssertionError(
                        f"{p.args[0]} exited with {p.returncode} while waiting for {what}:\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.5)

    def run(self, *command: str) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done.stdout

    def node_idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def job(self, job_id: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """Stop exactly the daemons started here, slurmd first, munged last."""
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, request):
    reason = install_slurm()
    if reason:
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\ntests/test_slurm.py skipped: {reason}")
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def submit(slurm: LocalSlurm, work: Path, run_name: str, processes: int, *sbatch: str, **settings) -> str:
    """sbatch run.slurm of the tiny config; `sbatch` options and train settings override the test's defaults."""
    env = {
        **slurm.env,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # this test's Python environment
        "NPROC": str(processes),
        "EXTRA": "--set experiment.seeds=[0,1]",  # a value with a comma, which --export could not carry
    }
    overrides = {
        "train.output_dir": work / "runs",
        "model.base_dir": work / "base",
        "data.source": work / "data" / "train.jsonl",
        "eval.source": work / "data" / "test.jsonl",
        "train.run_name": run_name,
        "train.stage1_steps": STEPS // 2,  # long enough for the interruption to land mid-run
        "train.stage2_steps": STEPS // 2,
        "train.save_every": 10,
        **settings,
    }
    command = [
        "sbatch",
        "--parsable",
        f"--partition={slurm.partition}",
        "--gres=none",
        "--cpus-per-task=2",
        "--time=20",
        *sbatch,
        f"--job-name={run_name}",
        f"--output={work / run_name}-%j.out",
        "--export=ALL,CONFIG=configs/tiny.yaml",
        str(REPO_ROOT / "run.slurm"),
        *[arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")],
    ]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def wait_for_steps(slurm: LocalSlurm, job_id: str, metrics: Path, steps: int) -> None:
    def reached() -> bool:
        state = slurm.job(job_id)["JobState"]
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job_id} is {state} before step {steps}"
        return metrics.exists() and len(metrics.read_text().splitlines()) >= steps

    slurm.wait_for(reached, f"job {job_id} to log {steps} steps", timeout=600)


def wait_until_done(slurm: LocalSlurm, job_id: str) -> dict[str, str]:
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
    slurm.wait_for(lambda: slurm.job(job_id)["JobState"] in ended, f"job {job_id} to end", timeout=900)
    return slurm.job(job_id)


@pytest.mark.parametrize("processes, interrupt", [(1, "usr1"), (2, "requeue"), (1, "time")])
def test_job_is_interrupted_requeued_and_resumes(slurm, tmp_path, processes, interrupt):
    run_name = f"job{processes}{interrupt}"
    run = tmp_path / "runs" / run_name
    if interrupt == "time":
        # 2 minutes, all 120 s of them kept for the checkpoint: after its first step training sees that no further
        # step fits and stops by itself, however fast the machine (USR1 at 1 s before the end, never reached); once
        # it has, the job gets 20 minutes to finish after its requeue
        margin = {"train.stop_margin": 120}
        job_id = submit(slurm, tmp_path, run_name, processes, "--time=2", "--signal=B:USR1@1", **margin)
        log_file = tmp_path / f"{run_name}-{job_id}.out"
        stopped = lambda: log_file.exists() and "stopped by the time limit" in log_file.read_text()  # noqa: E731
        slurm.wait_for(stopped, f"job {job_id} to stop before its time limit", timeout=600)
        slurm.run("scontrol", "update", f"JobId={job_id}", "TimeLimit=20")
    else:
        job_id = submit(slurm, tmp_path, run_name, processes)
        wait_for_steps(slurm, job_id, run / "metrics.jsonl", 1)
    if interrupt == "usr1":  # what --signal=B:USR1@300 sends before the time limit
        slurm.run("scancel", "--batch", "--signal=USR1", job_id)
    elif interrupt == "requeue":
        slurm.run("scontrol", "requeue", job_id)
    job = wait_until_done(slurm, job_id)
    log = (tmp_path / f"{run_name}-{job_id}.out").read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log[-5000:], slurm.logs())
    if interrupt == "time":  # a restart that began before the update stops again
        assert int(job["Restarts"]) >= 1 and "run.slurm: stopped (status 75); requeueing" in log, job
        assert re.search(r"stopped by the time limit after step \d+ of 30", log), log[-5000:]
    else:
        assert int(job["Restarts"]) == 1, job
        assert re.search(r"stopped by signal \w+ after step \d", log), log[-5000:]
    assert re.search(r"resuming from .*step_\d", log), log[-5000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    metrics = json.loads(next((run / "eval").glob("*/metrics.json")).read_text())
    assert metrics["model"] == str(run / "final") and metrics["n"] > 0
    if processes == 2:
        assert "weights identical on 2 processes" in log
