"""Shared fixtures: the tiny local model and the project's sample MATH-style problems."""

from pathlib import Path

import pytest
from score import tiny


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 model with its tokenizer, built once per test session."""
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def sample_rows() -> list[dict]:
    return tiny.sample_problems()


@pytest.fixture(scope="session")
def sample_jsonl(tmp_path_factory, sample_rows) -> Path:
    """The sample problems as a MATH-500-style JSONL file."""
    return tiny.write_sample_jsonl(tmp_path_factory.mktemp("jsonl") / "math.jsonl", sample_rows)


@pytest.fixture(scope="session")
def sample_tar_root(tmp_path_factory, sample_rows) -> Path:
    """A folder holding MATH/{train,test}/<subject>/<n>.json, as MATH.tar extracts."""
    root = tmp_path_factory.mktemp("tar")
    tiny.write_sample_tar_layout(root, sample_rows)
    return root
