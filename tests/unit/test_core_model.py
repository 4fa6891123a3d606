"""Models are built from a transformers config sized to the tokenizer; typos are refused."""

from __future__ import annotations

import pytest
import torch

from scheduler.domain.errors import PlanError, SpecError
from scheduler.domain.spec import ModelSpec
from workers.core.model import build_model, parameter_count
from workers.core.parallelize import apply_activation_checkpointing
from workers.core.tokenizer import ByteTokenizer

TINY_LLAMA = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "intermediate_size": 64}


def test_the_embedding_follows_the_tokenizer_and_the_seed_fixes_the_weights() -> None:
    spec = ModelSpec(architecture="llama", config=TINY_LLAMA)
    model = build_model(spec, ByteTokenizer(), seed=0)
    assert model.get_input_embeddings().weight.shape == (258, 32)
    assert model.config.eos_token_id == ByteTokenizer().eos_id
    again = build_model(spec, ByteTokenizer(), seed=0)
    assert parameter_count(model) == parameter_count(again) > 0
    assert all((a == b).all() for a, b in zip(model.parameters(), again.parameters(), strict=True))


def test_an_explicit_vocab_size_is_kept_and_one_below_the_tokenizer_refused() -> None:
    """It used to be replaced by the tokenizer's size without a word, so the plan (costed at
    the given size) and the model differed."""
    padded = ModelSpec(architecture="llama", config={**TINY_LLAMA, "vocab_size": 320})
    model = build_model(padded, ByteTokenizer(), seed=0)
    assert model.get_input_embeddings().weight.shape == (320, 32)
    small = ModelSpec(architecture="llama", config={**TINY_LLAMA, "vocab_size": 100})
    with pytest.raises(SpecError, match="raise it to at least 258"):
        build_model(small, ByteTokenizer(), seed=0)


def test_aliases_of_a_config_are_accepted() -> None:
    spec = ModelSpec(architecture="gpt2", config={"hidden_size": 32, "num_hidden_layers": 1,
                                                  "num_attention_heads": 2})
    assert build_model(spec, ByteTokenizer(), seed=0).config.n_embd == 32


def test_a_misspelt_config_field_is_refused_with_a_suggestion() -> None:
    spec = ModelSpec(architecture="llama", config={**TINY_LLAMA, "hiden_size": 64})
    with pytest.raises(SpecError, match=r"no field\(s\) hiden_size \(did you mean hidden_size\?\)"):
        build_model(spec, ByteTokenizer(), seed=0)


def test_an_unknown_architecture_names_known_ones() -> None:
    with pytest.raises(SpecError, match=r"'lama' is not a transformers model_type.*'llama'"):
        build_model(ModelSpec(architecture="lama"), ByteTokenizer(), seed=0)


def test_activation_checkpointing_is_switched_on_and_needs_a_transformers_model() -> None:
    model = build_model(ModelSpec(architecture="llama", config=TINY_LLAMA), ByteTokenizer(), 0)
    apply_activation_checkpointing(model)
    assert model.is_activation_checkpointing
    with pytest.raises(PlanError, match="needs a transformers model"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))
