import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from score import tiny
from score.config import REPO_ROOT, DataConfig, ScoreError
from score.data import MissingSplit, Problem, load_math, subject_key, training_problems

MATH500 = REPO_ROOT.parent / "shared" / "data" / "math500.jsonl"


def put(root, uid, level="Level 2", subject="Algebra", answer=None, **extra):
    """One problem file of the original tar layout; its gold answer is boxed in the solution."""
    path = root / "MATH" / uid
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = answer or path.stem
    record = {"problem": f"Problem {uid}", "level": level, "type": subject, "solution": f"So \\boxed{{{answer}}}."}
    path.write_text(json.dumps(record | extra))


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "data"
    put(root, "train/algebra/1.json", "Level 1")
    put(root, "train/algebra/10.json", "Level 5", answer="\\frac{1}{2}")
    put(root, "train/algebra/2.json", "Level 3")
    put(root, "train/geometry/3.json", "Level ?", "Geometry")  # as in a few real MATH rows
    put(root, "test/algebra/5.json", "Level 4")
    put(root, "test/counting_and_probability/7.json", "Level 2", "Counting & Probability")
    put(root, "test/geometry/8.json", "Level 1", "Geometry")
    (root / "MATH" / "test" / "algebra" / "._5.json").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / "math500_ids.txt").write_text("test/geometry/8.json\ntest/counting_and_probability/7.json\n")
    return root


def rows_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tar_layout_full_scheme(layout, capsys):
    train = load_math(layout, split="train", scheme="full")
    assert [p.id for p in train] == ["train/algebra/1.json", "train/algebra/2.json", "train/algebra/10.json"]
    assert train[2] == Problem(
        "train/algebra/10.json",
        "Problem train/algebra/10.json",
        "So \\boxed{\\frac{1}{2}}.",
        "\\frac{1}{2}",
        "Algebra",
        5,
    )
    assert "skipped 1 problems" in capsys.readouterr().out  # the "Level ?" row
    test = load_math(layout / "MATH", split="test", scheme="full")  # MATH/ itself works too
    assert [(p.id, p.subject, p.level, p.answer) for p in test] == [
        ("test/algebra/5.json", "Algebra", 4, "5"),
        ("test/counting_and_probability/7.json", "Counting & Probability", 2, "7"),
        ("test/geometry/8.json", "Geometry", 1, "8"),
    ]


def test_paper_scheme_holds_out_math500(layout):
    ids = layout / "math500_ids.txt"
    test = load_math(layout, split="test", scheme="paper", math500_ids=ids)
    assert [p.id for p in test] == ["test/geometry/8.json", "test/counting_and_probability/7.json"]  # list order
    train = load_math(layout, split="train", scheme="paper", math500_ids=ids)
    assert [p.id for p in train] == [
        "train/algebra/1.json",
        "train/algebra/2.json",
        "train/algebra/10.json",
        "test/algebra/5.json",
    ]


def test_paper_scheme_errors(layout):
    with pytest.raises(ScoreError, match=r"math500_ids.txt not found; run `python code/main.py --task download`"):
        load_math(layout, scheme="paper", math500_ids=layout / "nope" / "math500_ids.txt")
    (layout / "ids.txt").write_text("test/geometry/8.json\ntest/geometry/999.json\n")
    with pytest.raises(ScoreError, match=r"1 MATH-500 ids .* \(first: test/geometry/999.json\)"):
        load_math(layout, split="test", math500_ids=layout / "ids.txt")
    with pytest.raises(ScoreError, match="unknown split 'dev'"):
        load_math(layout, split="dev", scheme="full")


def test_missing_data_says_download(tmp_path):
    for source in (tmp_path / "MATH", "data/no-such-folder"):
        with pytest.raises(ScoreError, match=r"not found; run `python code/main.py --task download`"):
            load_math(source)
    with pytest.raises(ScoreError) as e:  # the user's own file: no download writes it
        load_math(tmp_path / "x.jsonl")
    assert str(e.value) == f"problem file {tmp_path / 'x.jsonl'} not found"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreError, match=r"no MATH data in .*empty .*--task download"):
        load_math(tmp_path / "empty")


def test_malformed_layout_file_is_named(layout):
    bad = layout / "MATH" / "train" / "algebra" / "4.json"
    bad.write_text('{"problem": "x", ')
    with pytest.raises(ScoreError, match=rf"{bad}: not valid JSON"):
        load_math(layout, scheme="full")
    bad.write_text(json.dumps({"problem": "x", "level": "Level 9", "type": "Algebra", "solution": "\\boxed{1}"}))
    with pytest.raises(ScoreError, match=rf"{bad}: level 'Level 9' is not 1-5"):
        load_math(layout, scheme="full")


def test_jsonl_rows_with_and_without_answer(tmp_path):
    path = rows_jsonl(
        tmp_path / "p.jsonl",
        [
            {"problem": "a", "solution": "\\boxed{2}", "answer": "\\frac12", "subject": "Algebra", "level": 3,
             "unique_id": "test/algebra/1.json"},
            {"problem": "b", "solution": "x \\boxed{1} then \\boxed{3}", "type": "Geometry", "level": "Level 1"},
            {"problem": "c", "answer": 7, "subject": "Number Theory", "level": "5"},
        ],
    )  # fmt: skip
    problems = load_math(path, split="ignored for files")
    assert [(p.id, p.answer, p.subject, p.level, p.solution) for p in problems] == [
        ("test/algebra/1.json", "\\frac12", "Algebra", 3, "\\boxed{2}"),  # a given answer wins
        ("p/2", "3", "Geometry", 1, "x \\boxed{1} then \\boxed{3}"),  # else the last \boxed{}
        ("p/3", "7", "Number Theory", 5, ""),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"problem": "a", ', "line 2: not valid JSON"),
        ('["a"]', "line 2: expected a JSON object, got list"),
        ('{"solution": "\\\\boxed{1}", "subject": "Algebra", "level": 1}', "line 2: missing field 'problem'"),
        ('{"problem": "a", "subject": "Algebra", "level": 1}', "line 2: missing field 'solution' \\(or 'answer'\\)"),
        ('{"problem": "a", "solution": "\\\\boxed{1}", "level": 1}', "line 2: missing field 'subject'"),
        ('{"problem": "a", "solution": "\\\\boxed{1}", "subject": "Algebra"}', "line 2: missing field 'level'"),
        ('{"problem": "a", "solution": "\\\\boxed{1}", "subject": "Algebra", "level": 6}', "line 2: level 6"),
        (
            '{"problem": ["a"], "solution": "\\\\boxed{1}", "subject": "Algebra", "level": 1}',
            "line 2: field 'problem' must be text, got list",
        ),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = {"problem": "a", "solution": "\\boxed{1}", "subject": "Algebra", "level": 1}
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(ScoreError, match=rf"^{path} {message}"):
        load_math(path)


def test_unusable_rows_are_counted_not_fatal(tmp_path, capsys):
    rows = [
        {"problem": "a", "solution": "\\boxed{1}", "subject": "Algebra", "level": "Level ?"},
        {"problem": "b", "solution": "no box", "subject": "Algebra", "level": 1},
        {"problem": "c", "solution": "\\boxed{1}", "subject": "Algebra", "level": 1},
    ]
    assert [p.problem for p in load_math(rows_jsonl(tmp_path / "p.jsonl", rows))] == ["c"]
    out = capsys.readouterr().out
    assert "skipped 2 problems" in out and "1 with level 'Level ?'" in out and "1 without a \\boxed{} answer" in out


def test_json_and_parquet_match_jsonl(tmp_path):
    rows = tiny.sample_problems()
    expected = load_math(rows_jsonl(tmp_path / "p.jsonl", rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert load_math(tmp_path / "p.json") == expected
    assert load_math(tmp_path / "p.parquet") == expected
    (tmp_path / "bad.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(ScoreError, match="expected a JSON list"):
        load_math(tmp_path / "bad.json")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ScoreError, match="bad.parquet: not a readable parquet file"):
        load_math(tmp_path / "bad.parquet")
    (tmp_path / "p.csv").write_text("problem\n")
    with pytest.raises(ScoreError, match="unsupported file type"):
        load_math(tmp_path / "p.csv")


def test_sample_tar_layout_and_jsonl_agree(tmp_path):
    rows = tiny.sample_problems()
    tiny.write_sample_tar_layout(tmp_path)
    from_layout = load_math(tmp_path, split="train", scheme="full") + load_math(tmp_path, split="test", scheme="full")
    from_jsonl = load_math(rows_jsonl(tmp_path / "p.jsonl", rows))
    assert len(from_jsonl) == len(rows)
    assert sorted(from_layout, key=lambda p: p.id) == sorted(from_jsonl, key=lambda p: p.id)


def test_filters_limit_and_seeded_shuffle(tmp_path):
    path = rows_jsonl(tmp_path / "p.jsonl", tiny.sample_problems())
    everything = load_math(path)
    geometry = load_math(path, subjects=["Geometry", "counting_and_probability"], levels=[1, 2])
    assert geometry == [
        p for p in everything if p.subject in ("Geometry", "Counting & Probability") and p.level in (1, 2)
    ]
    assert load_math(path, seed=None, limit=5) == everything[:5]
    shuffled = load_math(path, seed=3)
    assert shuffled == load_math(path, seed=3) != everything
    assert sorted(shuffled, key=lambda p: p.id) == sorted(everything, key=lambda p: p.id)
    assert load_math(path, seed=3, limit=4) == shuffled[:4]
    assert load_math(path, limit=0) == everything  # 0 means no limit, as data.max_problems
    with pytest.raises(ScoreError, match="unknown subject 'calculus'"):
        load_math(path, subjects=["Calculus"])
    with pytest.raises(ScoreError, match="level 6 is not a MATH level"):
        load_math(path, levels=[6])
    assert subject_key("Counting & Probability") == "counting_and_probability"


def test_duplicate_ids_are_an_error(tmp_path):
    row = tiny.sample_problems()[0]
    with pytest.raises(ScoreError, match="appears twice"):
        load_math(rows_jsonl(tmp_path / "p.jsonl", [row, row]))


def test_a_problem_repeated_without_ids_is_an_error_naming_both_lines(tmp_path):
    row = {k: v for k, v in tiny.sample_problems()[0].items() if k != "unique_id"}
    other = {k: v for k, v in tiny.sample_problems()[1].items() if k != "unique_id"}
    path = rows_jsonl(tmp_path / "p.jsonl", [row, other, row])
    with pytest.raises(ScoreError, match=rf"^{path} line 3 repeats the problem of {path} line 1 \(neither has an id\)"):
        load_math(path)
    assert len(load_math(rows_jsonl(tmp_path / "q.jsonl", [row, other, {**row, "answer": "another"}]))) == 3


def test_local_dataset_folder_through_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = tiny.sample_problems()
    folder = tmp_path / "hubcopy"
    folder.mkdir()
    for split in ("train", "test"):
        rows_jsonl(folder / f"{split}.jsonl", [r for r in rows if r["unique_id"].startswith(split)])
    test = load_math(folder, split="test")
    assert [p.id for p in test] == [r["unique_id"] for r in rows if r["unique_id"].startswith("test")]
    with pytest.raises(ScoreError, match=r"has no split 'validation' \(it has: train, test\)"):
        load_math(folder, split="validation")


def test_separate_split_refuses_a_source_read_whole(tmp_path, monkeypatch):
    # Evaluation's default (data.source's test split) must not silently become the training problems.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = tiny.sample_problems()
    path = rows_jsonl(tmp_path / "train.jsonl", rows)
    assert len(load_math(path, split="test")) == len(rows)  # without separate_split a file is its own split
    with pytest.raises(MissingSplit, match=r"train.jsonl is a single file, so it has no 'test' split of its own$"):
        load_math(path, split="test", separate_split=True)
    folder = tmp_path / "hubcopy"
    folder.mkdir()
    rows_jsonl(folder / "train.jsonl", rows)
    with pytest.raises(MissingSplit, match=r"has no 'test' split \(it has: train\)$"):
        load_math(folder, split="test", separate_split=True)
    rows_jsonl(folder / "test.jsonl", rows[:2])
    assert len(load_math(folder, split="test", separate_split=True)) == 2


def test_hub_dataset_id(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name):
        calls.append(name)
        if name != "Org/MATH-like":
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub (offline)\nmore detail")
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(tiny.sample_problems()[:3])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems = load_math("Org/MATH-like", split="train")  # a single-split dataset is its own split
    assert [p.id for p in problems] == [r["unique_id"] for r in tiny.sample_problems()[:3]]
    with pytest.raises(
        ScoreError, match=r"^cannot load dataset Org/Other: Couldn't reach 'Org/Other' on the Hub \(offline\)$"
    ):
        load_math("Org/Other")
    assert calls == ["Org/MATH-like", "Org/Other"]


@pytest.mark.skipif(not MATH500.is_file(), reason="../shared/data/math500.jsonl is not on this machine")
def test_real_math500():
    problems = load_math(MATH500)
    assert len(problems) == 500
    assert len({p.subject for p in problems}) == 7
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    assert all(p.answer for p in problems)
    assert len({p.id for p in problems}) == 500 and problems[0].id == "test/precalculus/807.json"


def test_no_training_problems_names_only_the_filters_in_use(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ScoreError) as e:
        training_problems(DataConfig(source=str(empty)))
    assert str(e.value) == f"no training problems in {empty}"  # no filter was set: none is blamed
    one = tiny.write_sample_jsonl(tmp_path / "one.jsonl", [tiny.sample_problems()[0]])  # Algebra, level 1
    with pytest.raises(ScoreError) as e:
        training_problems(DataConfig(source=str(one), levels=[5]))
    assert str(e.value) == f"no training problems in {one} after the filters data.levels=[5]"
    with pytest.raises(ScoreError, match=r"after the filters data.subjects=\['Prealgebra'\], data.levels=\[1\]$"):
        training_problems(DataConfig(source=str(one), subjects=["Prealgebra"], levels=[1]))
