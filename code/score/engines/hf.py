"""The Hugging Face engine: one padded `model.generate` call per attempt of a batch, on the model itself.

Sampling uses only the temperature and top-p given: the model's own generation_config (Qwen ships top_k=20 and
repetition_penalty=1.05, for example) is set aside during the call, because the policy gradient assumes the
attempts are samples of the policy being trained.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from score.engines import Engine, Samples, Sampling


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


class HFEngine(Engine):
    """Samples with the model's `generate`, in eval mode under no_grad; the model's mode is restored after."""

    def __init__(self, model):
        self.model = model

    @property
    def generation_config(self):
        return self.model.generation_config

    def sample(self, prompts: list[list[int]], sampling: Sampling) -> Samples:
        """generate pads finished rows with pad_id, which may itself be a stop token (pad == eos), so a row ends
        at its FIRST stop token and everything after it is padding."""
        model = self.model
        options = {} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        config = GenerationConfig(
            do_sample=not sampling.greedy,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=sampling.stop_ids,
            pad_token_id=sampling.pad_id,
            **options,
        )
        input_ids, attention_mask = left_pad(prompts, sampling.pad_id, model.device)
        was_training, saved_config = model.training, model.generation_config
        model.eval()
        model.generation_config = config
        try:
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            model.generation_config = saved_config
            model.train(was_training)
        out = out[:, input_ids.shape[1] :].cpu()
        is_stop = torch.isin(out, torch.tensor(sampling.stop_ids))
        lengths = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1) + 1, out.shape[1])
        return Samples([row[:n] for row, n in zip(out.tolist(), lengths.tolist(), strict=True)])
