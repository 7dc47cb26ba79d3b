import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from score import download as dl
from score import tiny
from score.config import REPO_ROOT, Config, ModelConfig, ScoreError
from score.data import load_math
from test_models import free_port

SAMPLES = tiny.sample_problems()
TEST_IDS = [r["unique_id"] for r in SAMPLES if r["unique_id"].startswith("test/")]


class Handler(SimpleHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        self.hits.append(self.path)
        if self.path == "/short.tar":  # announces more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base url, folder, request paths)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    hits = []
    handler = type("H", (Handler,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answering from local Dataset objects: MATH-500 ids and a per-subject MATH copy."""
    import datasets

    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "Org/MATH-500":
            return datasets.Dataset.from_list([r for r in SAMPLES if r["unique_id"].startswith("test/")])
        if name == "Org/MATH":
            rows = [r for r in SAMPLES if r["unique_id"].startswith(f"{split}/{config}/")]
            rows = [{"problem": r["problem"], "level": f"Level {r['level']}", "type": r["subject"],
                     "solution": r["solution"]} for r in rows]  # fmt: skip
            return datasets.Dataset.from_list(rows)
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def make_config(tmp_path, url="", hub="Org/MATH") -> Config:
    cfg = Config()
    cfg.download.model = False
    cfg.download.math_url = url
    cfg.download.math_hub = hub
    cfg.download.math500_hub = "Org/MATH-500"
    cfg.download.data_dir = str(tmp_path / "data")
    cfg.data.math500_ids = str(tmp_path / "data" / "math500_ids.txt")
    return cfg


def tar_of(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:  # noqa: B006 (never mutated)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def sample_tar(tmp_path) -> bytes:
    math_dir = tiny.write_sample_tar_layout(tmp_path / "src")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(math_dir, arcname="MATH")
    return buffer.getvalue()


def test_math_tar_over_http(tmp_path, server, fake_hub, capsys):
    url, www, hits = server
    (www / "MATH.tar").write_bytes(sample_tar(tmp_path))
    cfg = make_config(tmp_path, url=f"{url}/MATH.tar", hub="")
    dl.download(cfg)
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir()) == ["MATH", "math500_ids.txt"]  # no archive or temp left
    assert hits == ["/MATH.tar"]
    assert "MATH.tar" in capsys.readouterr().err  # the progress bar
    assert (data / "math500_ids.txt").read_text().split() == TEST_IDS
    test = load_math(data / "MATH", split="test", math500_ids=data / "math500_ids.txt")
    assert [p.id for p in test] == TEST_IDS
    train = load_math(data / "MATH", split="train", math500_ids=data / "math500_ids.txt")
    assert len(train) == len(SAMPLES) - len(TEST_IDS)

    dl.download(cfg)  # complete: nothing fetched again
    assert hits == ["/MATH.tar"] and len(fake_hub) == 1
    assert "already there" in capsys.readouterr().out


@pytest.mark.parametrize(
    "members, links",
    [
        ({"MATH/train/a.json": b"{}", "/tmp/evil.json": b"{}"}, {}),
        ({"MATH/train/a.json": b"{}", "MATH/../../evil.json": b"{}"}, {}),
        ({"MATH/train/a.json": b"{}"}, {"MATH/test": "../../.."}),
        ({"MATH/train/a.json": b"{}"}, {"MATH/test": "/etc"}),
    ],
)
def test_unsafe_archive_is_refused(tmp_path, server, members, links):
    url, www, hits = server
    (www / "MATH.tar").write_bytes(tar_of(members, links))
    with pytest.raises(ScoreError, match=r"^refusing archive member '.*': (absolute path or '\.\.'|link to .* leaves)"):
        dl.download(make_config(tmp_path, url=f"{url}/MATH.tar", hub=""))
    assert list((tmp_path / "data").iterdir()) == []
    assert not [p for p in tmp_path.rglob("evil*")] and not (tmp_path / "data" / "MATH").exists()


def test_archive_without_math_folders(tmp_path, server):
    url, www, _ = server
    (www / "MATH.tar").write_bytes(tar_of({"other/readme.txt": b"hi"}))
    with pytest.raises(ScoreError, match="no MATH/train and MATH/test folders"):
        dl.download(make_config(tmp_path, url=f"{url}/MATH.tar", hub=""))
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("path", ["/short.tar", "/missing.tar"])
def test_broken_transfer_leaves_nothing(tmp_path, server, path):
    url, _, _ = server
    with pytest.raises(ScoreError, match=rf"^cannot download {url}{path}: "):
        dl.download(make_config(tmp_path, url=url + path, hub=""))
    assert list((tmp_path / "data").iterdir()) == []


def test_offline_is_one_clear_line(tmp_path, fake_hub):
    url = f"http://127.0.0.1:{free_port()}/MATH.tar"
    with pytest.raises(ScoreError, match=rf"^cannot download {url}: .*refused$"):
        dl.download(make_config(tmp_path, url=url, hub=""))
    assert list((tmp_path / "data").iterdir()) == []

    with pytest.raises(ScoreError) as caught:  # the hub fallback is offline too
        dl.download(make_config(tmp_path, url=url, hub="Org/Offline-MATH"))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"cannot download {url}: ")
    assert "cannot load Org/Offline-MATH (algebra) from the hub: Couldn't reach" in str(caught.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_math_from_hub_keeps_math500_ids(tmp_path, fake_hub, capsys):
    cfg = make_config(tmp_path)  # no URL: the hub copy
    dl.download(cfg)
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir()) == ["MATH", "math500_ids.txt"]
    # the hub rows have no file names: MATH-500 problems get their unique_id, so the paper split works
    test = load_math(data, split="test", math500_ids=data / "math500_ids.txt")
    assert [(p.id, p.problem) for p in test] == [
        (r["unique_id"], r["problem"]) for r in SAMPLES if r["unique_id"] in TEST_IDS
    ]
    full = load_math(data, split="train", scheme="full") + load_math(data, split="test", scheme="full")
    assert sorted(p.problem for p in full) == sorted(r["problem"] for r in SAMPLES)
    assert f"{len(TEST_IDS)} of {len(TEST_IDS)} MATH-500 problems matched" in capsys.readouterr().out


def test_hub_math500_rows_missing_from_the_hub_copy(tmp_path, monkeypatch):
    import datasets

    extra = {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"}  # fmt: skip
    math500 = [r for r in SAMPLES if r["unique_id"] == "test/algebra/3.json"] + [extra]

    def load_dataset(name, config=None, split=None):
        if name == "Org/MATH-500":
            return datasets.Dataset.from_list(math500)
        rows = [r for r in SAMPLES if r["unique_id"].startswith(f"{split}/{config}/")]
        rows = [{"problem": r["problem"], "level": f"Level {r['level']}", "type": r["subject"],
                 "solution": r["solution"]} for r in rows]  # fmt: skip
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    dl.download(make_config(tmp_path))
    data = tmp_path / "data"
    algebra = sorted(p.name for p in (data / "MATH" / "test" / "algebra").iterdir())
    # 3 hub test rows: the MATH-500 one keeps 3.json, the others take numbers MATH-500 leaves free (0, 2);
    # MATH-500's 1.json is not in the hub copy and comes from MATH-500 itself
    assert algebra == ["0.json", "1.json", "2.json", "3.json"]
    test = load_math(data, split="test", math500_ids=data / "math500_ids.txt")
    assert [(p.id, p.problem, p.answer) for p in test] == [
        ("test/algebra/3.json", math500[0]["problem"], math500[0]["answer"]),
        ("test/algebra/1.json", "What is $1+1$?", "2"),
    ]


def test_model_snapshot(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, local_dir, token):
        calls.append((repo_id, local_dir, token))
        local_dir.mkdir(parents=True)
        (local_dir / "config.json").write_text("{}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    cfg = make_config(tmp_path)
    cfg.download.math, cfg.download.model = False, True
    cfg.model = ModelConfig(name="Org/Model-1B", base_dir=str(tmp_path / "base"))
    dl.download(cfg)
    target = tmp_path / "base" / "Org" / "Model-1B"
    assert (target / "config.json").is_file()
    assert calls == [("Org/Model-1B", tmp_path / "base" / "Org" / "Model-1B.partial", "hf_secret")]
    assert sorted(p.name for p in target.parent.iterdir()) == ["Model-1B"]
    dl.download(cfg)  # complete: skipped
    assert len(calls) == 1

    cfg.model.name = str(target)  # a local folder is used as it is
    assert dl.download_model(cfg.model) is None and len(calls) == 1


def test_model_snapshot_failure(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(repo_id, local_dir, token):
        local_dir.mkdir(parents=True)
        (local_dir / "model-00001.safetensors").write_bytes(b"half")  # kept in .partial for the resume
        raise OSError("Cannot reach https://huggingface.co\nretry later")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    model = ModelConfig(name="Org/Model-1B", base_dir=str(tmp_path / "base"))
    with pytest.raises(
        ScoreError, match=r"^cannot download model Org/Model-1B: Cannot reach https://huggingface.co \("
    ):
        dl.download_model(model)
    assert not (tmp_path / "base" / "Org" / "Model-1B").exists()


@pytest.mark.parametrize("layout", [False, True])
def test_builtin_builds_tiny_model_and_samples(tmp_path, layout):
    from transformers import AutoConfig

    cfg = make_config(tmp_path)
    cfg.download.builtin = "tiny"
    cfg.model = ModelConfig(name="tiny-qwen2", base_dir=str(tmp_path / "base"))
    ids = tmp_path / "data" / "math500_ids.txt"
    if layout:
        cfg.data.source = str(tmp_path / "data" / "MATH")
    else:
        cfg.data.source, cfg.eval.source = str(tmp_path / "d" / "train.jsonl"), str(tmp_path / "d" / "test.jsonl")
    dl.download(cfg)
    assert AutoConfig.from_pretrained(tmp_path / "base" / "tiny-qwen2").model_type == "qwen2"
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["tiny-qwen2"]
    if layout:
        train, test = (load_math(cfg.data.source, split=s, math500_ids=ids) for s in ("train", "test"))
    else:
        train, test = load_math(cfg.data.source), load_math(cfg.eval.source)
        assert not ids.exists()
    assert [p.id for p in test] == TEST_IDS
    assert len(train) == len(SAMPLES) - len(TEST_IDS)
    dl.download(cfg)  # everything there: kept as it is


def test_a_download_stopped_by_sigterm_is_one_line_and_leaves_no_partial_folder(tmp_path):
    # The testbed's base model is built in base_models/.testbed-*.<random>, then renamed: SIGTERM midway must remove it.
    base = tmp_path / "base"
    settings = [f"model.base_dir={base}", f"data.source={tmp_path / 'a.jsonl'}", f"eval.source={tmp_path / 'b.jsonl'}"]
    command = [sys.executable, str(REPO_ROOT / "code" / "main.py"), "--task", "download"]
    command += ["--config", str(REPO_ROOT / "configs" / "testbed.yaml"), *(a for s in settings for a in ("--set", s))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env) as proc:
        deadline = time.monotonic() + 120
        while not (base.is_dir() and any(base.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "the build never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM and stderr.strip().splitlines()[-1] == "stopped by SIGTERM", stderr
    assert list(base.iterdir()) == []
