"""Parameters and training FLOPs of a transformer (decoder LMs, BERT-style encoders).


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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scheduler.domain.errors import SpecError

__all__ = ["LinearLayer", "TransformerShape", "training_flops_per_token"]

_GATED_MLP_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})
"""model_types whose MLP is gated (gate, up, down: SwiGLU, or GeGLU in Gemma), RMSNorm, rotary
positions. Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``: the same
weights in fewer matrices. Gemma-2 adds a norm after attention and before and after the MLP;
Qwen3 normalises each head's queries and keys (``q_norm``, ``k_norm``, head_dim weights each)."""
_GELU_MLP_FAMILIES = frozenset({"gpt2"})
"""model_types with a 2-matrix GELU MLP, LayerNorm with bias, learned positions, biases."""
_ENCODER_FAMILIES = frozenset({"bert"})
"""Bidirectional encoders (BERT, MiniLM): post-LayerNorm blocks with biases everywhere, a 2-matrix
GELU MLP, learned positions and token types, a pooler, and no language-model head — a finetune
classifies from the pooled first token, so the head's work per token is nil."""
_FUSED_PROJECTION_FAMILIES = frozenset({"phi3"})
_FOUR_NORM_FAMILIES = frozenset({"gemma2"})
_HEAD_NORM_FAMILIES = frozenset({"qwen3"})

LinearInput = Literal["attention_in", "attention_out", "mlp_in", "mlp_out"]
"""The activation a block's linear layer multiplies: the normed input of attention (q, k, v),
the attention output (o), the normed input of the MLP (gate, up / fc) or the MLP's hidden
activation (down / proj)."""


@dataclass(frozen=True, slots=True)
class LinearLayer:
    """One weight matrix of a transformer block."""

    in_features: int
    out_features: int
    reads: LinearInput


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
    output_bias: bool = False
    """A bias on the attention output projection (GPT-2; Llama with ``attention_bias``)."""
    mlp_bias: bool = False
    norms_per_layer: int = 2
    head_norms: bool = False
    """Per-head RMSNorm of queries and keys (Qwen3): 2·d_h weights per layer."""
    fused_projections: bool = False
    """q/k/v in one ``qkv_proj`` and gate/up in one ``gate_up_proj`` (Phi-3)."""
    encoder: bool = False
    """A bidirectional encoder (BERT family): token types and a pooler, no output head."""
    token_types: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TransformerShape:
        """The shape a transformers ``config.to_dict()`` describes (the ``_*_FAMILIES`` above)."""
        family = config.get("model_type")
        if family in _GELU_MLP_FAMILIES:
            hidden = int(config["n_embd"])
            heads = int(config["n_head"])
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(config["n_layer"]),
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=hidden // heads,
                intermediate_size=int(config.get("n_inner") or 4 * hidden),
                gated_mlp=False,
                tied_embeddings=bool(config.get("tie_word_embeddings", True)),
                learned_positions=int(config["n_positions"]),
                layer_norm_bias=True,
                qkv_bias=True,
                output_bias=True,
                mlp_bias=True,
            )
        if family in _ENCODER_FAMILIES:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=hidden // heads,
                intermediate_size=int(config["intermediate_size"]),
                gated_mlp=False,
                tied_embeddings=True,
                learned_positions=int(config["max_position_embeddings"]),
                layer_norm_bias=True,
                qkv_bias=True,
                output_bias=True,
                mlp_bias=True,
                encoder=True,
                token_types=int(config.get("type_vocab_size", 2)),
            )
        if family in _GATED_MLP_FAMILIES:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            # Qwen2 always biases q, k and v (not o); Llama, Qwen3 and Gemma bias all four with
            # attention_bias; Mistral and Phi-3 have no biases.
            attention_bias = bool(config.get("attention_bias"))
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate_size=int(config["intermediate_size"]),
                gated_mlp=True,
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=family == "qwen2" or attention_bias,
                output_bias=family != "qwen2" and attention_bias,
                mlp_bias=bool(config.get("mlp_bias")),
                norms_per_layer=4 if family in _FOUR_NORM_FAMILIES else 2,
                head_norms=family in _HEAD_NORM_FAMILIES,
                fused_projections=family in _FUSED_PROJECTION_FAMILIES,
            )
        supported = ", ".join(sorted(_GATED_MLP_FAMILIES | _GELU_MLP_FAMILIES
                                     | _ENCODER_FAMILIES))
        raise SpecError(
            f"model_type {family!r} has no FLOPs formula in the cost model; supported: {supported}"
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
        """N of ``6·N``: the layers' matmul weights plus the output head d·V (an encoder has
        none: its pooler and classifier work on one token per sequence)."""
        head = 0 if self.encoder else self.hidden_size * self.vocab_size
        return self.layer_matmul_parameters + head

    def parameter_count(self) -> int:
        """All parameters, as ``model.num_parameters()`` counts them (tied weights once)."""
        d, f = self.hidden_size, self.intermediate_size
        norm = 2 * d if self.layer_norm_bias else d
        query_key_value = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        biases = (
            (query_key_value if self.qkv_bias else 0)
            + (d if self.output_bias else 0)
            + ((2 if self.gated_mlp else 1) * f + d if self.mlp_bias else 0)
        )
        per_layer = self.attention_matmul_parameters + self.mlp_matmul_parameters + biases
        per_layer += self.norms_per_layer * norm
        if self.head_norms:
            per_layer += 2 * self.head_dim
        embeddings = (self.vocab_size + self.learned_positions + self.token_types) * d
        head = 0 if self.tied_embeddings else self.vocab_size * d
        pooler = d * d + d if self.encoder else 0  # BertModel's pooler; the final norm is
        # the embedding LayerNorm for an encoder (post-norm blocks end in their own norms)
        return self.num_layers * per_layer + norm + embeddings + head + pooler

    def parameter_tensors(self) -> int:
        """How many parameter tensors ``model.parameters()`` yields: the optimizer and the
        FSDP hooks do host work per tensor, whatever its size."""
        norm = 2 if self.layer_norm_bias else 1
        # Phi-3's qkv_proj and GPT-2's c_attn hold q, k and v in one matrix.
        fused_qkv = self.fused_projections or not (self.gated_mlp or self.encoder)
        attention = (2 if fused_qkv else 4) + ((1 if fused_qkv else 3) if self.qkv_bias else 0)
        attention += 1 if self.output_bias else 0
        mlp = (2 if self.fused_projections else 3) if self.gated_mlp else 2
        mlp += mlp if self.mlp_bias else 0
        per_layer = attention + mlp + self.norms_per_layer * norm + (2 if self.head_norms else 0)
        embeddings = 1 + (1 if self.learned_positions else 0) + (1 if self.token_types else 0)
        head = 0 if self.tied_embeddings else 1
        pooler = 2 if self.encoder else 0
        return self.num_layers * per_layer + norm + embeddings + head + pooler

    def linear_layers(self) -> dict[str, LinearLayer]:
        """The weight matrices of one block, by their module path inside the block."""
        d, f, d_h = self.hidden_size, self.intermediate_size, self.head_dim
        query, key_value = self.num_heads * d_h, self.num_kv_heads * d_h
        if self.encoder:  # BERT: attention.self.{query,key,value}, post-norm dense layers
            return {
                "attention.self.query": LinearLayer(d, query, "attention_in"),
                "attention.self.key": LinearLayer(d, key_value, "attention_in"),
                "attention.self.value": LinearLayer(d, key_value, "attention_in"),
                "attention.output.dense": LinearLayer(query, d, "attention_out"),
                "intermediate.dense": LinearLayer(d, f, "mlp_in"),
                "output.dense": LinearLayer(f, d, "mlp_out"),
            }
        if not self.gated_mlp:  # GPT-2: fused c_attn, Conv1D layers
            return {
                "attn.c_attn": LinearLayer(d, query + 2 * key_value, "attention_in"),
                "attn.c_proj": LinearLayer(query, d, "attention_out"),
                "mlp.c_fc": LinearLayer(d, f, "mlp_in"),
                "mlp.c_proj": LinearLayer(f, d, "mlp_out"),
            }
        if self.fused_projections:
            return {
                "self_attn.qkv_proj": LinearLayer(d, query + 2 * key_value, "attention_in"),
                "self_attn.o_proj": LinearLayer(query, d, "attention_out"),
                "mlp.gate_up_proj": LinearLayer(d, 2 * f, "mlp_in"),
                "mlp.down_proj": LinearLayer(f, d, "mlp_out"),
            }
        return {
            "self_attn.q_proj": LinearLayer(d, query, "attention_in"),
            "self_attn.k_proj": LinearLayer(d, key_value, "attention_in"),
            "self_attn.v_proj": LinearLayer(d, key_value, "attention_in"),
            "self_attn.o_proj": LinearLayer(query, d, "attention_out"),
            "mlp.gate_proj": LinearLayer(d, f, "mlp_in"),
            "mlp.up_proj": LinearLayer(d, f, "mlp_in"),
            "mlp.down_proj": LinearLayer(f, d, "mlp_out"),
        }

    def adapted_layers(self, target_modules: Sequence[str] | str | None) -> list[LinearLayer]:
        """The layers of one block that LoRA adapts, matching names as peft does.

        ``None`` is peft's default for the family (q_proj and v_proj; GPT-2's c_attn);
        ``"all-linear"`` every linear layer of the block (peft leaves the output head out); a
        name matches a module path equal to it or ending in ``.name`` (``c_proj`` is both of
        GPT-2's output projections).
        """
        layers = self.linear_layers()
        if target_modules == "all-linear":
            return list(layers.values())
        if target_modules is None:
            if self.fused_projections:
                raise ValueError("peft has no default LoRA target for phi3; name target_modules")
            target_modules = (["query", "value"] if self.encoder else
                              ["c_attn"] if not self.gated_mlp else ["q_proj", "v_proj"])
        names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        chosen = [
            layer
            for path, layer in layers.items()
            if any(path == name or path.endswith(f".{name}") for name in names)
        ]
        if not chosen:
            raise ValueError(
                f"LoRA target_modules {names} name no layer of this model's blocks "
                f"({', '.join(path.rsplit('.', 1)[-1] for path in layers)})"
            )
        return chosen

    def lora_parameter_count(self, target_modules: Sequence[str] | str | None, rank: int) -> int:
        """Trainable parameters of LoRA (Hu et al. 2021): A (r × in) and B (out × r) per
        adapted matrix, r·(in + out), in every layer; no biases."""
        per_layer = sum(
            rank * (layer.in_features + layer.out_features)
            for layer in self.adapted_layers(target_modules)
        )
        # "all-linear" also adapts an encoder's pooler, the one linear layer outside its blocks
        pooler = rank * 2 * self.hidden_size if self.encoder and target_modules == "all-linear" \
            else 0
        return self.num_layers * per_layer + pooler

    def attention_flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs of QKᵀ and AV per token over all layers: 4·L·H·d_h·S."""
        return 4 * self.num_layers * self.num_heads * self.head_dim * seq_len


def training_flops_per_token(shape: TransformerShape, seq_len: int, recompute: bool = False) -> int:
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
