"""Token streams packed into fixed windows, a train/eval split, and a deterministic sampler.

Packing: the documents' token ids, each followed by the end-of-text id, are concatenated into
one stream and cut into windows of ``seq_len + 1`` tokens; window ``i`` starts at token
``i·seq_len``, so consecutive windows share one token and every token is predicted exactly once
(inputs are ``window[:-1]``, targets ``window[1:]``).

Split: the last ``round(windows · eval_fraction)`` windows (at least one when the fraction is
positive) are held out for evaluation; the rest train.

Sampling: the training windows are shuffled once per epoch by a permutation seeded from
``(seed, epoch)``. Sample ``g`` of the run is position ``g mod windows`` of epoch
``g div windows``. Step ``s`` (1-based) consumes samples ``(s−1)·B … s·B−1`` of the run, where
``B = dp · grad_accum · micro_batch``; data-parallel rank ``r`` takes the contiguous block
``r·grad_accum·micro_batch …`` of them. The batch of (step, rank) is therefore a pure function
of ``(seed, step, rank)``, which is why a resumed run continues with exactly the batches the
uninterrupted run would have seen, without saving any iterator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scheduler.domain.errors import SpecError
from workers.core.tokenizer import TextTokenizer

_ENCODE_CHUNK_DOCUMENTS = 1024
"""Documents per ``encode_batch`` call: large enough for the Rust tokenizer's thread pool,
small enough that the Python id lists of one chunk stay small."""


@dataclass(frozen=True)
class PackedWindows:
    """A 1-D token stream read as windows of ``seq_len + 1`` tokens, window i at ``i·seq_len``."""

    tokens: torch.Tensor
    seq_len: int

    def __len__(self) -> int:
        return max(0, (self.tokens.numel() - 1) // self.seq_len)

    def window(self, index: int) -> torch.Tensor:
        """Window ``index`` as ``seq_len + 1`` int64 ids."""
        start = index * self.seq_len
        return self.tokens[start : start + self.seq_len + 1].long()

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each ``[len(indices), seq_len]``, for the given windows."""
        windows = torch.stack([self.window(index) for index in indices])
        return windows[:, :-1], windows[:, 1:]


def token_stream(documents: Sequence[str], tokenizer: TextTokenizer) -> torch.Tensor:
    """All documents' ids as one stream, each document followed by the end-of-text id."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    # int32 halves the memory of int64 and holds any vocabulary below 2³¹ ids.
    pieces: list[np.ndarray] = []
    for start in range(0, len(documents), _ENCODE_CHUNK_DOCUMENTS):
        chunk = documents[start : start + _ENCODE_CHUNK_DOCUMENTS]
        for ids in tokenizer.encode_batch(chunk):
            pieces.append(np.asarray(ids + eos, dtype=np.int32))
    if not pieces:
        return torch.zeros(0, dtype=torch.int32)
    return torch.from_numpy(np.concatenate(pieces))


def split_windows(
    tokens: torch.Tensor, seq_len: int, eval_fraction: float
) -> tuple[PackedWindows, PackedWindows | None]:
    """Train windows and the held-out tail of eval windows (None when the fraction is 0)."""
    total_windows = max(0, (tokens.numel() - 1) // seq_len)
    eval_windows = round(total_windows * eval_fraction)
    if eval_fraction > 0:
        eval_windows = max(1, eval_windows)
    train_windows = total_windows - eval_windows
    if train_windows < 1:
        raise SpecError(
            f"the corpus has {tokens.numel()} tokens: {total_windows} window(s) of "
            f"seq_len + 1 = {seq_len + 1} tokens, too few for training and "
            f"{eval_windows} eval window(s); add documents, lower data.seq_len or "
            f"data.eval_fraction"
        )
    boundary = train_windows * seq_len
    train = PackedWindows(tokens[: boundary + 1], seq_len)
    if eval_windows == 0:
        return train, None
    return train, PackedWindows(tokens[boundary:], seq_len)


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's sequences divide over data-parallel ranks and micro-steps."""

    dp_size: int
    grad_accum: int
    micro_batch: int

    @property
    def samples_per_rank(self) -> int:
        return self.grad_accum * self.micro_batch

    @property
    def samples_per_step(self) -> int:
        return self.dp_size * self.samples_per_rank


class StepSampler:
    """Window indices of (step, dp rank): a pure function of the seed, step and rank."""

    def __init__(self, num_windows: int, seed: int, layout: BatchLayout) -> None:
        if num_windows < 1:
            raise ValueError("a sampler needs at least one window")
        self.num_windows = num_windows
        self.seed = seed
        self.layout = layout
        self._epoch = -1
        self._permutation = torch.zeros(0, dtype=torch.int64)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The shuffled order of the windows in ``epoch``."""
        if epoch != self._epoch:
            # A fresh generator per epoch keeps the order independent of what came before.
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(self.num_windows, generator=generator)
            self._epoch = epoch
        return self._permutation

    def sample(self, sample_index: int) -> int:
        """Window index of run-wide sample ``sample_index``."""
        epoch, position = divmod(sample_index, self.num_windows)
        return int(self.permutation(epoch)[position])

    def micro_batches(self, step: int, dp_rank: int) -> list[list[int]]:
        """``grad_accum`` lists of ``micro_batch`` window indices for 1-based ``step``."""
        if step < 1 or not 0 <= dp_rank < self.layout.dp_size:
            raise ValueError(f"step {step} must be >= 1 and dp rank {dp_rank} in range")
        first = (step - 1) * self.layout.samples_per_step + dp_rank * self.layout.samples_per_rank
        mb = self.layout.micro_batch
        return [
            [self.sample(first + m * mb + i) for i in range(mb)]
            for m in range(self.layout.grad_accum)
        ]


def eval_micro_batches(
    num_windows: int, num_batches: int, micro_batch: int, dp_rank: int, dp_size: int
) -> list[list[int]]:
    """Eval window indices for this rank: batch b takes block ``b·dp + rank``, wrapping around."""
    return [
        [((batch * dp_size + dp_rank) * micro_batch + i) % num_windows for i in range(micro_batch)]
        for batch in range(num_batches)
    ]
