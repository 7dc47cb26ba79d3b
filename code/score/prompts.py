"""The self-correction conversation and its token ids.

A conversation with K attempts is
    [system], user: first_turn + problem, assistant: y1, user: correction, assistant: y2, ..., assistant: yK
rendered with the tokenizer's chat template (PLAIN_TEMPLATE when it has none).

Attempts are sampled token ids, and re-tokenising their decoded text can give other ids (BPE is not injective
on ids), so the conversation is never re-rendered from text. Instead the template is rendered once with a
placeholder for every earlier attempt and cut at the placeholders: the pieces are the prompt before attempt 1 and,
for each later attempt, the ids between the end of the previous attempt's content and the start of the next one
(end of turn, correction turn, generation prompt). A conversation is then
    pieces[0] + y1 + pieces[1] + y2 + ... + yK
with the sampled ids spliced in unchanged (see `splice`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from score.config import PromptConfig, ScoreError

# Used for tokenizers without a chat template: "User:/Assistant:" turns, an assistant turn ends with eos.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% else %}Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:\n{% endif %}"
)

PLACEHOLDER = "[[SCORE-ATTEMPT-{}]]"


def first_turn_text(problem: str, prompts: PromptConfig) -> str:
    """User turn 1 in the paper's layout: the instruction, a blank line, then `Problem:` and the problem."""
    return f"{prompts.first_turn}\n\nProblem:\n{problem}"


def build_messages(problem: str, prompts: PromptConfig, attempts: list[str]) -> list[dict]:
    """Chat messages up to the next attempt: every earlier attempt is followed by the correction instruction."""
    messages = [{"role": "system", "content": prompts.system}] if prompts.system else []
    messages.append({"role": "user", "content": first_turn_text(problem, prompts)})
    for attempt in attempts:
        messages.append({"role": "assistant", "content": attempt})
        messages.append({"role": "user", "content": prompts.correction})
    return messages


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The conversation as text through the tokenizer's chat template, or PLAIN_TEMPLATE when it has none."""
    template = None
    if getattr(tokenizer, "chat_template", None) is None:
        if tokenizer.eos_token is None:
            raise ScoreError("the tokenizer has neither a chat template nor an eos token to end an assistant turn")
        template = PLAIN_TEMPLATE
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as e:
        raise ScoreError(f"the chat template rejected the conversation: {e}") from None


@dataclass
class ConversationPieces:
    """Token ids around the attempts of one problem's conversation."""

    prompt: list[int]  # x: everything before attempt 1, ending with the assistant generation prompt
    between: list[list[int]]  # between[k-1]: ids after attempt k's content, up to the start of attempt k+1


def conversation_pieces(tokenizer, problem: str, prompts: PromptConfig, attempts: int = 2) -> ConversationPieces:
    """Render the conversation with a placeholder for each of the first attempts - 1 attempts and cut it there."""
    placeholders = [PLACEHOLDER.format(k) for k in range(1, attempts)]
    text = render(tokenizer, build_messages(problem, prompts, placeholders))
    pieces = []
    for placeholder in placeholders:
        before, found, text = text.partition(placeholder)
        if not found or placeholder in text:
            raise ScoreError("the chat template does not render earlier assistant turns verbatim")
        pieces.append(before)
    pieces.append(text)
    ids = [tokenizer(piece, add_special_tokens=False)["input_ids"] for piece in pieces]
    return ConversationPieces(prompt=ids[0], between=ids[1:])


def splice(between: list[int], attempt: list[int], stop_ids: set[int]) -> list[int]:
    """The ids that follow a sampled attempt.

    When the attempt ended with the very token the template uses to close an assistant turn (e.g. <|im_end|>),
    that sampled token stays part of the attempt and is not repeated. A truncated attempt, or one that stopped
    on another stop token, gets the template's own end of turn.
    """
    if attempt and between and attempt[-1] in stop_ids and attempt[-1] == between[0]:
        return between[1:]
    return between


def end_of_turn_id(tokenizer, prompts: PromptConfig) -> int | None:
    """The special token that closes an assistant turn in the template (e.g. <|im_end|>), if there is one."""
    between = conversation_pieces(tokenizer, "", prompts, attempts=2).between[0]
    token = tokenizer.added_tokens_decoder.get(between[0]) if between else None
    return between[0] if token is not None and token.special else None
