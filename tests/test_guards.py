from types import SimpleNamespace

import pytest
from score.config import REPO_ROOT, ScoreError, load_config
from score.data import Problem
from score.guards import check_context
from transformers import AutoTokenizer


def test_context_check_of_evaluation_alone_ignores_the_training_budget(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model_config = SimpleNamespace(max_position_embeddings=512)
    problems = [Problem(id="p", problem="What is 1 + 1?", solution="", answer="2", subject="Algebra", level=1)]
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", ["rollout.max_new_tokens=1000", "eval.max_new_tokens=100"])
    check_context(tokenizer, model_config, problems, cfg, evaluating=True, training=False)
    with pytest.raises(ScoreError, match=r"2 attempts x rollout.max_new_tokens=1000 .* context is 512 tokens"):
        check_context(tokenizer, model_config, problems, cfg, evaluating=True)
    cfg.eval.max_new_tokens = 300
    with pytest.raises(ScoreError, match=r"^conversations may need \d+ tokens \(2 attempts x eval.max_new_tokens=300"):
        check_context(tokenizer, model_config, problems, cfg, evaluating=True, training=False)
