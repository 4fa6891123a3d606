"""Parameters and training FLOPs of a decoder-only transformer, from its transformers config.

One function serves the planner's time estimate and the workers' MFU, so the two always count
the same work. Pure arithmetic: no torch.

Notation (per layer unless said otherwise)::

    V  vocabulary size            d    hidden size           L   layers
    H  query heads                H_kv key/value heads      d_h head dim (d / H unless set)
    f  MLP intermediate size      S    sequence length (tokens per sequence)

Convention: a FLOP is one floating-point add or multiply, so a multiply-accumulate is 2 FLOPs
and multiplying an (m × k) by a (k × n) matrix costs 2·m·k·n. Only matrix multiplications are
counted (norms, activations, softmax, residual adds and biases are O(d) per token and left out,
as in both sources below).

Matmul parameters per layer (the weights a token is multiplied by)::

    attention  P_attn = d·H·d_h (q) + 2·d·H_kv·d_h (k, v) + H·d_h·d (o)
    MLP        P_mlp  = 3·d·f (SwiGLU: gate, up, down; Llama family)
                      | 2·d·f (GELU: fc, proj; GPT-2 family)

    N = L·(P_attn + P_mlp) + d·V

``N`` counts the output head ``d·V`` once whether or not it is tied to the input embedding:
the head is a matmul per token, the embedding a table lookup (0 FLOPs). Position embeddings,
norms and biases are excluded. This is the ``N`` of PaLM's ``6N`` (Chowdhery et al. 2022,
appendix B) with the head made explicit; Kaplan et al. 2020 leave the head out of ``N``.

Training FLOPs per token (forward + backward; backward costs twice the forward because it
computes the gradient of both operands of every matmul)::

    forward           2·N + 4·L·H·d_h·S
    training  C_tok = 6·N + 12·L·H·d_h·S

The attention term: per layer a query multiplies S keys (QKᵀ: 2·S·H·d_h) and the S values
(AV: 2·S·H·d_h), so 4·L·H·d_h·S forward, 12·L·H·d_h·S for training, PaLM's ``12·L·H·Q·T``.
It counts the full S × S score matrix, as dense attention computes it (a causal flash kernel
skips the masked half). With ``d = H·d_h`` and ``f = 4·d``, dropping GQA, ``C_tok`` becomes
``72·L·d² + 12·L·d·S + 6·d·V``: Narayanan et al. 2021 ("Efficient Large-Scale Language Model
Training on GPU Clusters Using Megatron-LM"), section 5.1, ``72·B·s·l·h²(1 + s/6h + V/12lh)``
divided by the ``B·s`` tokens of a batch.

Activation recomputation runs each layer's forward once more in backward (the output head is
not recomputed), adding ``2·L·(P_attn + P_mlp) + 4·L·H·d_h·S`` per token: Megatron's
``96·B·s·l·h²(1 + s/6h + V/16lh)``, i.e. 8/6 on the layers. That is hardware FLOPs (HFU);
model FLOPs utilisation (MFU, PaLM appendix B) counts the work without recomputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.domain.errors import SpecError

__all__ = ["TransformerShape", "training_flops_per_token"]

_GATED_MLP_FAMILIES = frozenset({"llama", "mistral", "qwen2"})
"""model_types whose MLP is SwiGLU (gate, up, down), RMSNorm, no learned positions."""
_GELU_MLP_FAMILIES = frozenset({"gpt2"})
"""model_types with a 2-matrix GELU MLP, LayerNorm with bias, learned positions, biases."""


@dataclass(frozen=True, slots=True)
class TransformerShape:
    """The sizes of a decoder-only transformer that its parameters and FLOPs depend on."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool
    tied_embeddings: bool
    learned_positions: int = 0
    """Rows of a learned position embedding (GPT-2's ``n_positions``); 0 for rotary."""
    layer_norm_bias: bool = False
    """LayerNorm (gain and bias, GPT-2) rather than RMSNorm (gain only, Llama)."""
    qkv_bias: bool = False
    all_linear_bias: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TransformerShape:
        """The shape a transformers ``config.to_dict()`` describes (llama, mistral, qwen2, gpt2)."""
        family = config.get("model_type")
        if family in _GELU_MLP_FAMILIES:
            hidden = int(config["n_embd"])
            heads = int(config["n_head"])
            return cls(vocab_size=int(config["vocab_size"]), hidden_size=hidden,
                       num_layers=int(config["n_layer"]), num_heads=heads, num_kv_heads=heads,
                       head_dim=hidden // heads,
                       intermediate_size=int(config.get("n_inner") or 4 * hidden),
                       gated_mlp=False,
                       tied_embeddings=bool(config.get("tie_word_embeddings", True)),
                       learned_positions=int(config["n_positions"]), layer_norm_bias=True,
                       all_linear_bias=True)
        if family in _GATED_MLP_FAMILIES:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            return cls(vocab_size=int(config["vocab_size"]), hidden_size=hidden,
                       num_layers=int(config["num_hidden_layers"]), num_heads=heads,
                       num_kv_heads=int(config.get("num_key_value_heads") or heads),
                       head_dim=int(config.get("head_dim") or hidden // heads),
                       intermediate_size=int(config["intermediate_size"]), gated_mlp=True,
                       tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                       qkv_bias=family == "qwen2" or bool(config.get("attention_bias")),
                       all_linear_bias=False)
        supported = ", ".join(sorted(_GATED_MLP_FAMILIES | _GELU_MLP_FAMILIES))
        raise SpecError(
            f"model_type {family!r} has no FLOPs formula in the cost model; supported: "
            f"{supported}"
        )

    @property
    def attention_matmul_parameters(self) -> int:
        """P_attn: q, k, v and o projection weights of one layer."""
        query_width = self.num_heads * self.head_dim
        key_value_width = self.num_kv_heads * self.head_dim
        return 2 * self.hidden_size * query_width + 2 * self.hidden_size * key_value_width

    @property
    def mlp_matmul_parameters(self) -> int:
        """P_mlp: 3·d·f (SwiGLU) or 2·d·f (GELU)."""
        matrices = 3 if self.gated_mlp else 2
        return matrices * self.hidden_size * self.intermediate_size

    @property
    def layer_matmul_parameters(self) -> int:
        """Matmul weights of all L layers: L·(P_attn + P_mlp)."""
        return self.num_layers * (self.attention_matmul_parameters + self.mlp_matmul_parameters)

    @property
    def matmul_parameters(self) -> int:
        """N of ``6·N``: the layers' matmul weights plus the output head d·V."""
        return self.layer_matmul_parameters + self.hidden_size * self.vocab_size

    def parameter_count(self) -> int:
        """All parameters, as ``model.num_parameters()`` counts them (tied weights once)."""
        d, f = self.hidden_size, self.intermediate_size
        norm = 2 * d if self.layer_norm_bias else d
        biases = 0
        if self.all_linear_bias:
            # q, k, v (fused in GPT-2), o, then the MLP's hidden and output layers.
            biases = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim + d + f + d
        elif self.qkv_bias:
            biases = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        per_layer = self.attention_matmul_parameters + self.mlp_matmul_parameters + biases
        per_layer += 2 * norm  # one norm before attention, one before the MLP
        embeddings = self.vocab_size * d + self.learned_positions * d
        head = 0 if self.tied_embeddings else self.vocab_size * d
        return self.num_layers * per_layer + norm + embeddings + head

    def attention_flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs of QKᵀ and AV per token over all layers: 4·L·H·d_h·S."""
        return 4 * self.num_layers * self.num_heads * self.head_dim * seq_len


def training_flops_per_token(shape: TransformerShape, seq_len: int,
                             recompute: bool = False) -> int:
    """FLOPs of one training token (forward + backward): 6·N + 12·L·H·d_h·S.

    With ``recompute`` the layers' forward runs a second time in backward:
    + 2·L·(P_attn + P_mlp) + 4·L·H·d_h·S (hardware FLOPs; leave it False for MFU).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    attention = shape.attention_flops_per_token(seq_len)
    flops = 6 * shape.matmul_parameters + 3 * attention
    if recompute:
        flops += 2 * shape.layer_matmul_parameters + attention
    return flops
