"""The compare job's presets: the configuration each one trains with and what its verdict checks.

Kept apart from :mod:`rnn_backends.compare` so that the command line can list them without
importing the job.
"""

from __future__ import annotations

from typing import Any

# What each preset checks beyond step 0 (which is always checked): the whole float64 oracle run
# and the ensemble's runs (``trajectory``; a float32 job only), the number of ensemble members
# (the plain float32 oracle and permuted ones), and how many training steps each framework saves
# for the single-step replays. The float32 quick job costs about 4 oracle runs more than float64.
PRESET_CHECKS: dict[str, dict[str, Any]] = {
    "quick": {"trajectory": True, "members": 4, "sampled_steps": 12},
    "textbook": {"trajectory": True, "members": 4, "sampled_steps": 12},
    # A float64 oracle run and 3 more float32 runs of the whole quality recipe would cost 4 of
    # its runs again; it is judged by step 0 and by single steps sampled along the run instead,
    # and by every checkpoint's float64 validation perplexity. It must beat the best n-gram.
    "quality": {"trajectory": False, "members": 3, "sampled_steps": 4, "beat_ngram": True},
}

# The optimizer, learning rate, schedule and warmup are left to the cell (TrainConfig.resolved): the
# tanh RNN trains with the book's SGD at lr 1, the GRU and the LSTM with Adam.
PRESETS: dict[str, dict[str, Any]] = {
    # Small enough that the whole job takes a couple of minutes on a 2-core CPU.
    "quick": dict(
        hidden_size=32,
        batch_size=256,
        num_steps=32,
        max_epochs=15,
        grad_clip=1.0,
        num_train=10000,
        num_val=5000,
    ),
    # A GRU that beats the best n-gram on validation and test (README, "A recipe that beats
    # the n-grams"): sequential batching over the whole training split with the state carried,
    # Adam with warmup and a cosine decay, float32. The recipe was chosen on validation data.
    "quality": dict(
        cell="gru",
        hidden_size=128,
        num_layers=1,
        batch_size=16,
        num_steps=64,
        max_epochs=20,
        grad_clip=1.0,
        batching="sequential",
        num_train=None,
        num_val=5000,
        num_test=5000,
        optimizer="adam",
        lr=0.01,
        schedule="cosine",
        warmup_steps=50,
        dtype="float32",
    ),
    # The textbook's own setup (use with --corpus timemachine).
    "textbook": dict(
        hidden_size=32,
        batch_size=1024,
        num_steps=32,
        max_epochs=100,
        grad_clip=1.0,
        num_train=10000,
        num_val=5000,
    ),
}

# The variant a preset runs when --variant is left out (None: each backend's default, the fast
# path). The quality preset runs each framework's own recurrent layer: on this 2-core CPU MXNet's
# fast path takes 1.7 s per step of its GRU (H 128, B 16 x 64 steps) and Gluon's rnn.GRU 0.3 s.
PRESET_VARIANTS: dict[str, str | None] = {"quality": "native"}

__all__ = ["PRESETS", "PRESET_CHECKS", "PRESET_VARIANTS"]
