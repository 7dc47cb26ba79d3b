"""MBPP through --task download, with a stand-in for the hub (no network here)."""

import pytest
from score.config import Config, ScoreError
from score.data import load_math
from score.download import MBPP_SPLITS, download_mbpp

ROW = {
    "task_id": 2,
    "text": "Write a function to find the shared elements from the given two lists.",
    "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
    "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
    "test_setup_code": "",
    "challenge_test_list": [],
}


@pytest.fixture
def hub(monkeypatch):
    import datasets

    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name != "Org/mbpp":
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub (offline)")
        return datasets.Dataset.from_list([{**ROW, "task_id": ROW["task_id"] + i} for i in range(3)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def config(tmp_path, hub_name="Org/mbpp"):
    cfg = Config()
    cfg.download.data_dir = str(tmp_path)
    cfg.download.mbpp_hub = hub_name
    return cfg


def test_mbpp_splits_are_written_and_read_back_as_code_problems(tmp_path, hub):
    download_mbpp(config(tmp_path).download)
    assert [c[1:] for c in hub] == [("full", split) for split in MBPP_SPLITS]
    problems = load_math(tmp_path / "mbpp" / "train.jsonl")
    assert [p.id for p in problems] == ["mbpp/2", "mbpp/3", "mbpp/4"] and problems[0].domain == "code"
    download_mbpp(config(tmp_path).download)  # a re-run finds every split there
    assert len(hub) == len(MBPP_SPLITS)


def test_mbpp_offline_is_one_error_line(tmp_path, hub):
    with pytest.raises(ScoreError, match="cannot load Org/missing"):
        download_mbpp(config(tmp_path, "Org/missing").download)
    assert not (tmp_path / "mbpp" / "train.jsonl").exists()
