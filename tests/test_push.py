import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from score.config import REPO_ROOT, ScoreError, load_config
from score.push import push

TOKEN = "hf_standin_token"


class StandInHub(BaseHTTPRequestHandler):
    """Just the endpoints HfApi.create_repo, create_branch and create_commit call, as the hub answers them, with every
    file in "regular" upload mode (its bytes go in the commit itself: no LFS or Xet transfer). Records each request
    and the files each commit carries; any other request is answered 404 and recorded too."""

    requests: list[tuple[str, str, str]]  # (method, path, Authorization header)
    created: list[dict]
    commits: list[dict]  # {"revision", "summary", "files": {path: bytes}, "others": keys of non-inline lines}

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.partition("?")[0]
        self.requests.append(("POST", path, self.headers.get("Authorization", "")))
        parts = path.strip("/").split("/")  # api, models, owner, name, action, revision
        if path == "/api/repos/create":
            payload = json.loads(body)
            self.created.append(payload)
            self.reply({"url": f"http://{self.headers['Host']}/{payload['organization']}/{payload['name']}"})
        elif path == "/api/validate-yaml":
            header = json.loads(body)["content"].split("---")[1]  # the card's YAML block must be a mapping
            ok = isinstance(yaml.safe_load(header), dict)
            self.reply({"errors": [] if ok else [{"message": "no mapping"}], "warnings": []}, 200 if ok else 400)
        elif parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "branch":
            self.reply({})
        elif parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "preupload":
            files = json.loads(body)["files"]
            self.reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        elif parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            files = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            others = [line["key"] for line in lines if line["key"] not in ("header", "file")]  # lfsFile: LFS or Xet
            self.commits.append({"revision": parts[5], "summary": header["summary"], "files": files, "others": others})
            commit_url = f"http://{self.headers['Host']}/{parts[2]}/{parts[3]}/commit/{'c' * 40}"
            self.reply({"commitUrl": commit_url, "commitOid": "c" * 40})
        else:
            self.reply({"error": "not served by the stand-in"}, 404)

    def do_GET(self):
        self.requests.append(("GET", self.path, self.headers.get("Authorization", "")))
        self.reply({"error": "not served by the stand-in"}, 404)

    def reply(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in hub on 127.0.0.1; yields (its URL, its handler class holding what it received). The token is
    HF_TOKEN's; no saved login of this machine is read (HF_HOME in tmp_path)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    handler = type("Hub", (StandInHub,), {"requests": [], "created": [], "commits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)  # HF_ENDPOINT, for this process's HfApi
    yield url, handler
    httpd.shutdown()
    httpd.server_close()


def model_folder(root: Path) -> Path:
    """A small model folder as a run leaves it: weights, config, tokenizer, a card and a subfolder."""
    final = root / "runs" / "tiny" / "final"
    (final / "adapter").mkdir(parents=True, exist_ok=True)
    (final / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (final / "config.json").write_text('{"model_type": "qwen2"}')
    (final / "tokenizer.json").write_text('{"version": "1.0"}')
    (final / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    (final / "README.md").write_text("---\nbase_model: Qwen/Qwen2.5-1.5B-Instruct\ntags:\n- score\n---\n\n# tiny\n")
    return final


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_uploads_every_file_of_final_through_main(tmp_path, hub):
    # The command line, in its own process: HF_ENDPOINT points huggingface_hub at the stand-in, HF_TOKEN signs.
    url, received = hub
    final = model_folder(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_ENDPOINT": url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, str(REPO_ROOT / "code" / "main.py"), "--task", "push", "--config", "configs/tiny.yaml"]
    command += [f"--set=train.output_dir={tmp_path / 'runs'}", "--set=push.repo=alice/tiny-score"]
    out = subprocess.run(command + ["--set=push.private=true"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"pushed {final} to {url}/alice/tiny-score" in out.stdout
    (created,) = received.created
    assert (created["organization"], created["name"]) == ("alice", "tiny-score")
    assert created.get("visibility") == "private" or created.get("private") is True  # huggingface_hub 2.x / 1.x
    (commit,) = received.commits
    assert commit["revision"] == "main" and commit["summary"] == "Upload tiny/final trained with SCoRe"
    assert commit["files"] == folder_files(final)  # every file, byte for byte, the subfolder's too
    assert commit["others"] == []  # all inline: no file went through LFS or Xet storage
    paths = [(method, path) for method, path, _ in received.requests]
    assert paths == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/alice/tiny-score/preupload/main"),
        ("POST", "/api/models/alice/tiny-score/commit/main"),
    ]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in received.requests)


def test_push_to_a_branch_with_a_message(tmp_path, hub):
    url, received = hub
    final = model_folder(tmp_path / "elsewhere")
    cfg = load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [f"push.folder={final}", "push.repo=alice/tiny-score", "push.revision=v1", "push.commit_message=seed 0"],
    )
    assert push(cfg) == f"{url}/alice/tiny-score/commit/{'c' * 40}"
    assert ("POST", "/api/models/alice/tiny-score/branch/v1") in [(m, p) for m, p, _ in received.requests]
    (commit,) = received.commits
    assert (commit["revision"], commit["summary"]) == ("v1", "seed 0")
    assert commit["files"] == folder_files(final)


@pytest.mark.parametrize("repo", ["", "tiny-score", "alice/tiny/score", "/tiny-score", "alice/", "alice/tiny score"])
def test_a_repo_name_that_is_not_owner_slash_name_is_refused(tmp_path, hub, repo):
    cfg = load_config(None, [f"push.folder={model_folder(tmp_path)}", f"push.repo={repo}"])
    with pytest.raises(ScoreError, match=r"^push.repo .* is not a hub repository name \(owner/name\)$"):
        push(cfg)
    assert hub[1].requests == []


def test_no_folder_no_card_no_token_are_refused_before_any_request(tmp_path, hub, monkeypatch):
    cfg = load_config(None, [f"train.output_dir={tmp_path / 'runs'}", "train.run_name=tiny", "push.repo=alice/m"])
    with pytest.raises(ScoreError, match=r"^no model folder .*runs/tiny/final to push; train first"):
        push(cfg)
    final = model_folder(tmp_path)
    (final / "README.md").unlink()
    with pytest.raises(ScoreError, match=r"final has no model card \(README.md\); a run writes one"):
        push(cfg)
    model_folder(tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ScoreError, match=r"^no Hugging Face token: set HF_TOKEN or run `hf auth login`$"):
        push(cfg)
    assert hub[1].requests == []


def test_a_failing_hub_is_one_error_line(tmp_path, hub, monkeypatch):
    final = model_folder(tmp_path)
    (final / "README.md").write_text("---\n- not a mapping\n---\n")  # the hub's YAML check refuses the card
    cfg = load_config(None, [f"push.folder={final}", "push.repo=alice/m"])
    with pytest.raises(ScoreError, match=r"^push of .*final to alice/m failed: [^\n]+$"):
        push(cfg)
    assert hub[1].commits == []
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ScoreError, match=r"^push of .*final to alice/m failed: [^\n]+$"):
        push(cfg)


def test_a_pushed_adapter_names_its_base_by_the_cards_hub_id(tmp_path, hub, capsys):
    # peft wrote the path the base was loaded from; on the hub that path means nothing
    _, received = hub
    final = model_folder(tmp_path)
    local = {"r": 4, "base_model_name_or_path": str(tmp_path / "base_models" / "Qwen2.5-1.5B-Instruct")}
    (final / "adapter" / "adapter_config.json").write_text(json.dumps(local))
    cfg = load_config(None, [f"push.folder={final}", "push.repo=alice/tiny-score"])
    push(cfg)
    sent = json.loads(received.commits[0]["files"]["adapter/adapter_config.json"])
    assert sent == {"r": 4, "base_model_name_or_path": "Qwen/Qwen2.5-1.5B-Instruct"}
    assert json.loads((final / "adapter" / "adapter_config.json").read_text()) == local  # the folder is untouched
    # a card without a hub base_model: the file goes as it is, with one warning line
    (final / "README.md").write_text("---\ntags:\n- score\n---\n\n# tiny\n")
    push(cfg)
    assert received.commits[1]["files"] == folder_files(final)
    assert capsys.readouterr().out.count("warning:") == 1
    (final / "adapter" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ScoreError, match=r"^push of .* failed: .*final/adapter/adapter_config.json is damaged \("):
        push(cfg)
    assert len(received.commits) == 2  # nothing uploaded
