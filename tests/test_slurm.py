"""run.slurm on a real Slurm (Debian's slurm-wlm 22.05 and munge) started for this test: one node on 127.0.0.1,
and a two-node cluster.

Two jobs of the tiny config, one with 1 and one with 2 training processes. The first gets the time-limit
warning (USR1 to the batch shell, as `--signal=B:USR1@300` sends it) mid-run and must checkpoint and requeue
itself; the second is requeued from outside with `scontrol requeue` (SIGTERM to every process). Both must
resume from their checkpoint, finish, and evaluate their own run. A third job, of 1 process, has a 2-minute
limit: training reads the job's end time, stops with a checkpoint by itself, and the job requeues.

The two-node cluster runs each slurmd in its own network namespace with its own address on a bridge (and its own
hostname and /etc/hosts), as two machines look to Slurm and to torch.distributed: a job of 2 nodes x 1 process,
requeued mid-run, must end with the weights of an uninterrupted run. Installing the packages needs root and
Debian's archive, and namespaces need root; where either is missing the tests print one line and skip.
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
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from score.config import REPO_ROOT
from test_models import free_port

pytestmark = pytest.mark.slurm

STEPS = 30
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "ip", "nsenter", "unshare")


def install_slurm() -> str | None:
    """Install slurm-wlm, munge and iproute2 when missing; the reason when they cannot be had."""
    if all(shutil.which(name) for name in PROGRAMS):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "needs root and apt-get to install slurm-wlm, munge and iproute2"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge", "iproute2"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    missing = [name for name in PROGRAMS if not shutil.which(name)]
    return f"installed, but {missing} not found" if missing else None


def skip(request, reason: str) -> None:
    """Skip with one line printed past pytest's capture, so that a skipped Slurm test is seen."""
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\ntests/test_slurm.py skipped: {reason}")
    pytest.skip(reason)


class NodeNetwork:
    """A bridge holding the controller's address and, per node, a network namespace with a veth on the bridge and
    its own address; names carry this process's id, apart from ../shared/slurm's (sn1, slbr0, 10.9.0.0/24)."""

    def __init__(self, nodes: int, root: Path):
        tag = f"sct{os.getpid()}"
        taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        subnet = next(f"10.213.{n}" for n in range(os.getpid() % 200, 256) if f" 10.213.{n}." not in taken)
        self.bridge = f"{tag}br"
        self.controller = f"{subnet}.254"
        self.nodes = {f"n{i}": (f"{tag}n{i}", f"{subnet}.{i}") for i in range(1, nodes + 1)}  # name: (netns, address)
        self.addresses = {name: address for name, (_, address) in self.nodes.items()}
        self.hosts = root / "hosts"  # /etc/hosts on every node: the node names resolve, as on a cluster
        self.created: list[tuple[str, str]] = []  # ("netns" | "link", name), in the order made

    def create(self) -> None:
        self.hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in self.addresses.items()))
        self.ip("link", "add", self.bridge, "type", "bridge")
        self.created.append(("link", self.bridge))
        self.ip("addr", "add", f"{self.controller}/24", "dev", self.bridge)
        self.ip("link", "set", self.bridge, "up")
        for netns, address in self.nodes.values():
            self.ip("netns", "add", netns)
            self.created.append(("netns", netns))
            outside, inside = f"{netns}h", f"{netns}v"  # a veth pair; `inside` moves into the namespace
            self.ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self.created.append(("link", outside))
            self.ip("link", "set", inside, "netns", netns)
            self.ip("link", "set", outside, "master", self.bridge, "up")
            self.ip("-n", netns, "addr", "add", f"{address}/24", "dev", inside)
            self.ip("-n", netns, "link", "set", inside, "up")
            self.ip("-n", netns, "link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"`ip {' '.join(args)}`: {done.stderr.strip()}")

    def on_node(self, name: str) -> list[str]:
        """The command prefix that runs a program as node `name`: its network namespace, its hostname and its
        /etc/hosts (private mount and UTS namespaces); the last step is an exec, so the program keeps the pid."""
        script = 'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"'
        netns = f"--net=/run/netns/{self.nodes[name][0]}"
        return ["nsenter", netns, "unshare", "--mount", "--uts", "sh", "-c", script, str(self.hosts), name]

    def remove(self) -> None:
        """Remove exactly what create() made, last first."""
        for kind, name in reversed(self.created):
            subprocess.run(["ip", kind, "del", name], capture_output=True)
        self.created = []


class LocalSlurm:
    """munged, slurmctld and one slurmd per node, all state, sockets and logs in `root`: one node on 127.0.0.1, or
    with `network` one per namespace of it."""

    def __init__(self, root: Path, network: NodeNetwork | None = None):
        self.root = root
        self.network = network
        self.nodes = network.addresses if network else {socket.gethostname(): "127.0.0.1"}  # name: address
        self.controller = network.controller if network else "127.0.0.1"
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
        for node in self.nodes:
            (self.root / "spool" / node).mkdir()
            self.spawn(*(self.network.on_node(node) if self.network else []), "slurmd", "-D", "-N", node)
        self.wait_for(self.nodes_idle, "the nodes to be idle")

    def write_config(self, munge_socket: Path) -> None:
        # the machine's own CPUs and memory, as slurmd detects them, for every node
        detected = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        hardware = re.search(r"CPUs=.*RealMemory=\d+", detected).group(0)
        nodes = "".join(
            f"NodeName={name} NodeAddr={address} {hardware} State=UNKNOWN\n" for name, address in self.nodes.items()
        )
        r = self.root
        (r / "slurm.conf").write_text(
            f"""ClusterName=scoretest
SlurmctldHost={socket.gethostname()}({self.controller})
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}/%n
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd-%n.pid"}
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r / "slurmd-%n.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
KillWait=120
MinJobAge=3600
{nodes}PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
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

    def nodes_idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return done.returncode == 0 and set(done.stdout.split()) == {"idle"}

    def job(self, job_id: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """Cancel this cluster's jobs left by a failure, then stop exactly the daemons started here, slurmd first,
        munged last."""
        try:
            self.run("scancel", f"--partition={self.partition}")
            self.wait_for(lambda: not self.run("squeue", "-h"), "this cluster's jobs to end", timeout=60)
        except (AssertionError, subprocess.SubprocessError) as e:  # a broken controller: the daemons stop anyway
            reason = (str(e) or type(e).__name__).splitlines()[0][:200]
            print(f"cleanup: this cluster's jobs were not cancelled ({reason}); stopping its daemons")
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def local_slurm(request, root: Path, nodes: int) -> Iterator[LocalSlurm]:
    """A running cluster of `nodes` (more than one: each in a network namespace); afterwards its daemons are
    stopped and its namespaces removed, whatever happened."""
    if reason := install_slurm():
        skip(request, reason)
    network = NodeNetwork(nodes, root) if nodes > 1 else None
    try:
        if network:
            try:
                network.create()
            except OSError as error:
                skip(request, f"cannot make network namespaces for {nodes} nodes: {error}")
        cluster = LocalSlurm(root, network)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
    finally:
        if network:
            network.remove()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, request):
    yield from local_slurm(request, tmp_path_factory.mktemp("slurm"), nodes=1)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, request):
    yield from local_slurm(request, tmp_path_factory.mktemp("slurm2"), nodes=2)


EXTRA = "--set experiment.seeds=[0,1]"  # a value with a comma, which --export could not carry


def main_settings(work: Path, run_name: str, **settings) -> list[str]:
    """main.py's --set arguments for the tiny config's run `run_name` in `work`; `settings` override them."""
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
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def submit(slurm: LocalSlurm, work: Path, run_name: str, processes: int, *sbatch: str, **settings) -> str:
    """sbatch run.slurm of the tiny config; `sbatch` options and train settings override the test's defaults."""
    env = {
        **slurm.env,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # this test's Python environment
        "NPROC": str(processes),
        "EXTRA": EXTRA,
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
        *main_settings(work, run_name, **settings),
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


def test_two_nodes_requeued_end_with_the_weights_of_an_uninterrupted_run(two_nodes, tmp_path):
    # 2 nodes x 1 process: torch.distributed meets on n1's address (run.slurm's static rendezvous), gloo between the
    # two namespaces; `scontrol requeue` sends SIGTERM to the processes on both nodes (and the batch shell passes USR1).
    run_name, steps = "nodes2", {"train.stage1_steps": 8, "train.stage2_steps": 8}
    run = tmp_path / "runs" / run_name
    job_id = submit(two_nodes, tmp_path, run_name, 1, "--nodes=2", **steps)
    wait_for_steps(two_nodes, job_id, run / "metrics.jsonl", 1)
    two_nodes.run("scontrol", "requeue", job_id)
    job = wait_until_done(two_nodes, job_id)
    logs = list(tmp_path.glob(f"{run_name}-*.out"))
    log = logs[0].read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log[-5000:], two_nodes.logs())
    assert job["NodeList"] == "n[1-2]" and int(job["Restarts"]) == 1 and len(logs) == 1, (job, logs)
    assert log.count("2 node(s) x 1 process(es)") == 2 and "weights identical on 2 processes" in log, log[-5000:]
    assert re.search(r"stopped by signal \w+ after step ([1-9]|1[0-5]) of 16", log), log[-5000:]
    assert re.search(r"resuming from .*step_([1-9]|1[0-5]) ", log), log[-5000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [*range(1, 17)]

    # The uninterrupted run: run.slurm's launch and arguments with both processes on this machine. The computation
    # is the same: 2 ranks with the same seeds and data shards, one thread each; the only collective that sums is
    # gloo's over 2 ranks, a + b, the same in either order, whatever the network.
    reference = tmp_path / "reference"
    command = [
        *[sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml"],
        *["--num_machines", "1", "--num_processes", "2", "--main_process_port", str(free_port())],
        *["code/main.py", "--task", "train", "--config", "configs/tiny.yaml", "--set", "grader.workers=2"],
        *EXTRA.split(),
        *main_settings(tmp_path, run_name, **steps, **{"train.output_dir": reference}),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = load_file(reference / run_name / "final" / "model.safetensors")
    resumed = load_file(run / "final" / "model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
