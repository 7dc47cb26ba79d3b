import pytest
from score.config import PromptConfig, ScoreError
from score.prompts import (
    build_messages,
    conversation_pieces,
    end_of_turn_id,
    first_turn_text,
    render,
    splice,
)
from transformers import AutoTokenizer

PROMPTS = PromptConfig(first_turn="Solve it.", correction="Check and fix.")


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def plain_tokenizer(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    return tokenizer


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_first_turn_layout():
    assert first_turn_text("What is 1+1?", PROMPTS) == "Solve it.\n\nProblem:\nWhat is 1+1?"


def test_messages_alternate_with_correction():
    assert build_messages("P", PROMPTS, ["a1", "a2"]) == [
        {"role": "user", "content": "Solve it.\n\nProblem:\nP"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "Check and fix."},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "Check and fix."},
    ]
    with_system = build_messages("P", PromptConfig(system="Be careful."), [])
    assert with_system[0] == {"role": "system", "content": "Be careful."} and len(with_system) == 2


def test_render_uses_the_chat_template(tokenizer):
    text = render(tokenizer, build_messages("P", PROMPTS, ["y1"]))
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nSolve it.\n\nProblem:\nP<|im_end|>\n"
        "<|im_start|>assistant\ny1<|im_end|>\n"
        "<|im_start|>user\nCheck and fix.<|im_end|>\n<|im_start|>assistant\n"
    )
    system = PromptConfig(first_turn="Solve it.", system="Be careful.")
    assert render(tokenizer, build_messages("P", system, [])).startswith("<|im_start|>system\nBe careful.<|im_end|>")


@pytest.mark.parametrize("template", ["chat", "plain"])
@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_pieces_rebuild_the_rendered_conversation(tokenizer, plain_tokenizer, template, attempts):
    tok = tokenizer if template == "chat" else plain_tokenizer
    pieces = conversation_pieces(tok, "What is $x$ if $2x = 4$?", PROMPTS, attempts)
    assert len(pieces.between) == attempts - 1
    # The prompt is what add_generation_prompt renders for the first turn.
    assert pieces.prompt == ids(tok, render(tok, build_messages("What is $x$ if $2x = 4$?", PROMPTS, [])))
    # With attempts whose text tokenises canonically, the pieces give the template's own rendering.
    answers = [f"The answer is {k}." for k in range(1, attempts)]
    joined = list(pieces.prompt)
    for answer, between in zip(answers, pieces.between, strict=True):
        joined += ids(tok, answer) + between
    assert joined == ids(tok, render(tok, build_messages("What is $x$ if $2x = 4$?", PROMPTS, answers)))


def test_plain_template(plain_tokenizer):
    text = render(plain_tokenizer, build_messages("P", PromptConfig(first_turn="Solve it.", system="S"), ["y1"]))
    assert text == "S\n\nUser: Solve it.\n\nProblem:\nP\n\nAssistant:\ny1<|im_end|>\n\nUser: " + (
        PromptConfig().correction + "\n\nAssistant:\n"
    )


def test_end_of_turn_token(tokenizer, plain_tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tokenizer, PROMPTS) == im_end
    assert end_of_turn_id(plain_tokenizer, PROMPTS) == plain_tokenizer.eos_token_id == im_end
    plain_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert end_of_turn_id(plain_tokenizer, PROMPTS) is None


def test_splice_keeps_the_sampled_end_of_turn(tokenizer):
    im_end, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    between = conversation_pieces(tokenizer, "P", PROMPTS).between[0]
    assert between[0] == im_end
    stops = {im_end, pad}
    assert splice(between, [5, 6, im_end], stops) == between[1:]  # sampled <|im_end|> closes the turn
    assert splice(between, [5, 6, 7], stops) == between  # truncated: the template closes the turn
    assert splice(between, [5, 6, pad], stops) == between  # stopped on another stop token
    assert splice(between, [], stops) == between


def test_template_that_drops_attempts_is_an_error(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}(hidden){% else %}{{ m['content'] }}"
        "{% endif %}{% endfor %}"
    )
    with pytest.raises(ScoreError, match="verbatim"):
        conversation_pieces(tokenizer, "P", PROMPTS, attempts=2)
    conversation_pieces(tokenizer, "P", PROMPTS, attempts=1)  # a single attempt needs no earlier turn


def test_template_errors_are_one_line(tokenizer, plain_tokenizer):
    tokenizer.chat_template = "{{ raise_exception('System role not supported') }}"
    with pytest.raises(ScoreError, match="System role not supported"):
        render(tokenizer, build_messages("P", PROMPTS, []))
    plain_tokenizer.eos_token = None
    with pytest.raises(ScoreError, match="neither a chat template nor an eos token"):
        render(plain_tokenizer, build_messages("P", PROMPTS, []))
