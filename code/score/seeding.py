"""Random states of a process (Python, NumPy, torch, CUDA): saved with a checkpoint, and kept around sampling that
must not move the training stream."""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def random_states() -> dict:
    """This process's RNG states as plain lists and tensors (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def random_states_kept():
    """Whatever draws inside (a held-out evaluation, an engine's start) leaves this process's random streams as they
    were: training samples the same with or without it."""
    states = random_states()
    try:
        yield
    finally:
        restore_random_states(states)
