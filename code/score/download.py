"""`--task download`: the base model, MATH and the MATH-500 id list, MBPP, or the built-in tiny kit.

Everything lands under a temporary name and is renamed when complete, so a final name never holds half a
download and a re-run skips what is there. The model snapshot resumes where it stopped (huggingface_hub keeps
its progress in `<name>.partial`). MATH comes from the original tar (streamed with a progress bar; members with
absolute paths, '..' or links leaving the archive are refused) or, when the URL is empty or fails, from the
hub's per-subject copy written into the same layout.
"""

from __future__ import annotations

import http.client
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from score import tiny
from score.config import Config, DataConfig, DownloadConfig, EvalConfig, ModelConfig, ScoreError, resolve_path
from score.data import FILE_SUFFIXES, MATH_SUBJECTS, error_line, subject_key, write_atomic
from score.progress import progress
from score.testbed import build_testbed
from score.testbed_code import CODE_TASK


def download_model(model: ModelConfig) -> Path | None:
    """Snapshot the hub model `model.name` into `<base_dir>/<name>`; HF_TOKEN is used for gated models."""
    if resolve_path(model.name).is_dir():
        print(f"model: {model.name} is a local folder, nothing to download")
        return None
    target = resolve_path(model.base_dir) / model.name
    if target.is_dir():
        print(f"model: {target} already downloaded")
        return target
    from huggingface_hub import snapshot_download

    partial = target.with_name(target.name + ".partial")
    print(f"model: downloading {model.name} -> {target}")
    try:
        snapshot_download(repo_id=model.name, local_dir=partial, token=os.environ.get("HF_TOKEN") or None)
    except Exception as e:  # the hub client raises many types (HTTP, connection, offline, validation)
        raise ScoreError(
            f"cannot download model {model.name}: {error_line(e)} (check the network; gated models need HF_TOKEN; "
            "a re-run resumes)"
        ) from None
    partial.rename(target)
    return target


def fetch(url: str, dest: Path) -> None:
    """Stream `url` to a temporary file with a progress bar, then rename it to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with progress(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise ScoreError(f"cannot download {url}: got {received} of {total} bytes")
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or error_line(e)
        raise ScoreError(f"cannot download {url}: {reason}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse members that would land outside the extraction folder or are not plain files/folders/links."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise ScoreError(f"refusing archive member {member.name!r}: absolute path or '..'")
    if member.issym() or member.islnk():
        # symlink targets are relative to the link's folder, hard-link targets to the archive root
        base = name.parent if member.issym() else PurePosixPath()
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise ScoreError(f"refusing archive member {member.name!r}: link to {member.linkname!r} leaves the archive")
    elif not (member.isfile() or member.isdir()):
        raise ScoreError(f"refusing archive member {member.name!r}: not a regular file or folder")


def extract_math(archive: Path, data_dir: Path) -> Path:
    """Extract MATH.tar into a temporary folder, then rename its MATH/ (train/, test/) to `<data_dir>/MATH`."""
    tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".MATH."))
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    check_member(member)
                tar.extractall(tmp, members=members, filter="data")  # the checks above, enforced again
        except (tarfile.TarError, EOFError) as e:
            raise ScoreError(f"{archive}: not a readable tar archive ({error_line(e)})") from None
        root = next((r for r in (tmp / "MATH", tmp) if (r / "train").is_dir() and (r / "test").is_dir()), None)
        if root is None:
            raise ScoreError(f"{archive}: no MATH/train and MATH/test folders in the archive")
        os.replace(root, data_dir / "MATH")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir / "MATH"


def math_from_url(url: str, data_dir: Path) -> Path:
    archive = data_dir / "MATH.tar"
    if not archive.is_file():
        print(f"MATH: downloading {url}")
        fetch(url, archive)
    try:
        return extract_math(archive, data_dir)
    finally:
        archive.unlink()  # extracted, or refused: either way a re-run should not reuse it


def hub_dataset(name: str, config: str | None = None, split: str | None = None):
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the hub client raises many types (offline, not found, bad files)
        what = f"{name} ({config})" if config else name
        raise ScoreError(f"cannot load {what} from the hub: {error_line(e)}") from None


def _normal(text: str) -> str:
    return " ".join(text.split())


def math_from_hub(name: str, data_dir: Path, math500: list[dict]) -> Path:
    """Write the hub's per-subject MATH copy into the tar layout `<data_dir>/MATH/{train,test}/<subject>/<n>.json`.

    The hub copy has no file names, so test problems take their MATH-500 unique_id when their text matches a
    MATH-500 problem (the paper split needs those ids) and free numbers otherwise. MATH-500 problems the hub
    copy lacks are written from MATH-500 itself, so the paper's test set is always complete.
    """
    by_text = {_normal(row["problem"]): row["unique_id"] for row in math500}
    taken = {row["unique_id"] for row in math500}
    placed: set[str] = set()
    counts = {"train": 0, "test": 0}
    tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".MATH."))
    try:
        for subject in MATH_SUBJECTS:
            folder = subject_key(subject)
            for split in ("train", "test"):
                out = tmp / "MATH" / split / folder
                out.mkdir(parents=True)
                n = 0
                for row in hub_dataset(name, folder, split):
                    uid = by_text.get(_normal(row["problem"])) if split == "test" else None
                    if uid is None or uid in placed or not uid.startswith(f"test/{folder}/"):
                        while f"{split}/{folder}/{n}.json" in taken:
                            n += 1
                        uid = f"{split}/{folder}/{n}.json"
                        n += 1
                    placed.add(uid)
                    try:
                        record = {k: row[k] for k in ("problem", "level", "type", "solution")}
                    except KeyError as e:
                        raise ScoreError(f"{name} ({folder}, {split}): rows have no field {e}") from None
                    (tmp / "MATH" / uid).write_text(json.dumps(record, indent=4), encoding="utf-8")
                    counts[split] += 1
        missing = [row for row in math500 if row["unique_id"] not in placed]
        for row in missing:
            record = {"problem": row["problem"], "level": f"Level {row['level']}", "type": row["subject"]}
            record["solution"] = row["solution"]
            (tmp / "MATH" / row["unique_id"]).write_text(json.dumps(record, indent=4), encoding="utf-8")
        os.replace(tmp / "MATH", data_dir / "MATH")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"MATH: {counts['train']} train and {counts['test'] + len(missing)} test problems from {name}; "
        f"{len(math500) - len(missing)} of {len(math500)} MATH-500 problems matched, the rest written from MATH-500"
    )
    return data_dir / "MATH"


def download_math(dl: DownloadConfig, ids_file: Path) -> None:
    """MATH into `<dl.data_dir>/MATH` (tar URL, else hub) and the MATH-500 unique ids into `ids_file`."""
    data_dir = resolve_path(dl.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    math500 = None  # MATH-500 rows, loaded once when needed
    if (data_dir / "MATH").is_dir():
        print(f"MATH: {data_dir / 'MATH'} already there")
    else:
        failure = None
        if dl.math_url:
            try:
                math_from_url(dl.math_url, data_dir)
            except ScoreError as e:
                if not dl.math_hub:
                    raise
                failure = str(e)
                print(f"MATH: {failure}; trying {dl.math_hub}")
        if not dl.math_url or failure:
            if not dl.math_hub:
                raise ScoreError("download.math_url and download.math_hub are both empty: no source for MATH")
            try:
                math500 = list(hub_dataset(dl.math500_hub, split="test"))
                math_from_hub(dl.math_hub, data_dir, math500)
            except ScoreError as e:
                raise ScoreError(f"{failure}; {e}" if failure else str(e)) from None
    if ids_file.is_file():
        print(f"MATH-500: {ids_file} already there")
        return
    if math500 is None:
        math500 = list(hub_dataset(dl.math500_hub, split="test"))
    write_atomic(ids_file, "".join(row["unique_id"] + "\n" for row in math500))
    print(f"MATH-500: {len(math500)} ids -> {ids_file}")


MBPP_SPLITS = ("train", "test", "validation", "prompt")  # the 'full' config: 374 / 500 / 90 / 10 problems


def download_mbpp(dl: DownloadConfig) -> None:
    """MBPP's splits from the hub into `<dl.data_dir>/mbpp/<split>.jsonl`, one row per line as published."""
    folder = resolve_path(dl.data_dir) / "mbpp"
    for split in MBPP_SPLITS:
        path = folder / f"{split}.jsonl"
        if path.is_file():
            print(f"MBPP: {path} already there")
            continue
        rows = list(hub_dataset(dl.mbpp_hub, "full", split=split))
        write_atomic(path, "".join(json.dumps(dict(row)) + "\n" for row in rows))
        print(f"MBPP: {len(rows)} {split} problems -> {path}")


def build_builtin(model: ModelConfig, data: DataConfig, evaluation: EvalConfig) -> None:
    """The tiny local model into `<base_dir>/<name>` and the sample problems at data.source / eval.source:
    a .jsonl file gets the train (data.source) or test (eval.source) samples, a folder the tar layout."""
    target = resolve_path(model.base_dir) / model.name
    if target.is_dir():
        print(f"model: {target} already built")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            os.replace(tiny.build_tiny_model(tmp / "model", **tiny.VLLM_HEADS), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"model: tiny model -> {target}")
    rows = tiny.sample_problems()
    for source, split in ((data.source, "train"), (evaluation.source, "test")):
        path = resolve_path(source) if source else None
        if path is None or path.exists():
            continue
        if path.suffix in FILE_SUFFIXES and path.suffix != ".jsonl":
            raise ScoreError(f"download.builtin writes sample problems to a .jsonl file or a MATH folder, not {path}")
        if path.suffix == ".jsonl":
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["unique_id"].startswith(split)))
        else:
            root = path.parent if path.name == "MATH" else path
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".MATH."))
            try:
                os.replace(tiny.write_sample_tar_layout(tmp), root / "MATH")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            ids_file = resolve_path(data.math500_ids)
            if not ids_file.exists():  # the sample test split plays MATH-500 in the paper scheme
                write_atomic(
                    ids_file, "".join(r["unique_id"] + "\n" for r in rows if r["unique_id"].startswith("test"))
                )
        print(f"data: sample problems -> {path}")


def download(cfg: Config) -> None:
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # offline, each retry would print a warning before our one error line
    if cfg.download.builtin == "tiny":
        build_builtin(cfg.model, cfg.data, cfg.eval)
        return
    if cfg.download.builtin == "testbed":
        build_testbed(cfg)
        return
    if cfg.download.builtin == "testbed-code":
        build_testbed(cfg, task=CODE_TASK)
        return
    if cfg.download.model:
        download_model(cfg.model)
    if cfg.download.math:
        download_math(cfg.download, resolve_path(cfg.data.math500_ids))
    if cfg.download.mbpp:
        download_mbpp(cfg.download)
