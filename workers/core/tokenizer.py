"""Tokenizers behind one small interface: raw bytes, BPE trained on the corpus, or a directory.

``byte``  256 byte values plus the special tokens; nothing to train or store.
``bpe``   byte-level BPE trained with the ``tokenizers`` library on the job's own documents and
          saved under ``run_dir/tokenizer/`` in the transformers layout, so a later attempt (a
          resume) and anyone using the trained model read the very same vocabulary.
``path``  any tokenizer directory transformers' ``AutoTokenizer`` can read.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from scheduler.domain.errors import SpecError
from scheduler.domain.locations import local_path
from scheduler.domain.spec import JobSpec, TokenizerSpec

END_OF_TEXT = "<|endoftext|>"
PADDING = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"

logger = logging.getLogger(__name__)


class TextTokenizer(Protocol):
    """What the data pipeline and the model builder need from any tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included (the model's embedding rows)."""
        ...

    @property
    def eos_id(self) -> int | None:
        """Id appended after every document, or None where the tokenizer has none."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens dropped."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, then ``<|endoftext|>`` (256) and ``<|pad|>`` (257)."""

    BYTES = 256

    @property
    def vocab_size(self) -> int:
        return self.BYTES + 2

    @property
    def eos_id(self) -> int:
        return self.BYTES

    @property
    def pad_id(self) -> int:
        return self.BYTES + 1

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < self.BYTES).decode("utf-8", errors="replace")


class BpeTokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained by :func:`train_bpe`."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.directory = directory
        self._tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self._tokenizer.token_to_id(END_OF_TEXT)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)


class PretrainedTokenizer:
    """A tokenizer directory read by transformers' ``AutoTokenizer``."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer

        self.directory = directory
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))

    @property
    def vocab_size(self) -> int:
        # len() counts added tokens, which ``vocab_size`` of a transformers tokenizer omits.
        return len(self._tokenizer)

    @property
    def eos_id(self) -> int | None:
        return self._tokenizer.eos_token_id

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self._tokenizer(list(texts), add_special_tokens=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))


def train_bpe(documents: Sequence[str], vocab_size: int, directory: Path) -> BpeTokenizer:
    """Train byte-level BPE on ``documents`` and save it atomically as ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT, PADDING],
        # Every byte is in the vocabulary, so no text is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
    trained_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if trained_size < vocab_size:
        # BPE stops when no pair of tokens is left to merge: every word is already one token.
        logger.warning("BPE vocabulary has %d tokens, fewer than tokenizer.vocab_size %d: the "
                       "corpus has no more pairs to merge; the model embeds %d ids",
                       trained_size, vocab_size, trained_size)

    # Write beside the final name and rename, so a crash never leaves a half-written tokenizer
    # that a later attempt would mistake for the trained one.
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=PADDING
    )
    fast.save_pretrained(str(staging))
    # A folder without tokenizer.json is debris of an interrupted attempt; replace it.
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return BpeTokenizer(directory)


def build_tokenizer(
    spec: TokenizerSpec,
    run_dir: Path,
    documents: Sequence[str],
    is_rank_zero: bool,
    barrier: Callable[[], None],
) -> TextTokenizer:
    """The job's tokenizer; for ``bpe`` rank 0 trains it once and the other ranks load it.

    Every rank must call this (it contains a barrier). A ``bpe`` tokenizer already saved in
    ``run_dir/tokenizer/`` by an earlier attempt is reused, never retrained, so a resumed run
    keeps the token ids its checkpoint was trained with.
    """
    if spec.kind == "byte":
        return ByteTokenizer()
    if spec.kind == "path":
        assert spec.path is not None  # TokenizerSpec guarantees a path for kind: path
        return PretrainedTokenizer(local_path(spec.path, "tokenizer.path"))
    directory = run_dir / "tokenizer"
    if is_rank_zero and not (directory / TOKENIZER_FILE).is_file():
        train_bpe(documents, spec.vocab_size, directory)
    barrier()
    return BpeTokenizer(directory)


TOKENIZER_CONFIG = "tokenizer_config.json"
"""The file every transformers tokenizer folder has (``save_pretrained`` writes it)."""


def model_tokenizer_folder(spec: JobSpec) -> Path | None:
    """The transformers tokenizer folder a finetune or compress job reads text with: its
    ``tokenizer.path``, or its weights folder (``tokenizer.kind: model``); None for bytes."""
    if spec.tokenizer.kind == "byte":
        return None
    if spec.tokenizer.kind == "path":
        assert spec.tokenizer.path is not None  # TokenizerSpec guarantees it
        return local_path(spec.tokenizer.path, "tokenizer.path")
    assert spec.model.path is not None  # JobSpec guarantees weights for these kinds
    directory = local_path(spec.model.path)
    if not (directory / TOKENIZER_CONFIG).is_file():
        raise SpecError(
            f"model.path: {directory} holds no tokenizer ({TOKENIZER_CONFIG}); a pretrain "
            f"export of the byte tokenizer has none: add tokenizer: {{kind: byte}}, or name a "
            f"tokenizer folder with tokenizer: {{kind: path, path: ...}}"
        )
    return directory
