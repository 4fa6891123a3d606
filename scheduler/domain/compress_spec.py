"""The ``compress:`` section of a job spec: quantize, prune or distill the model in ``model.path``.

Used only with ``kind: compress``. ``model.path`` (a directory, ``pkg:`` or ``job:NAME``) is the
model being compressed: quantize and prune change it, distill teaches a smaller student of the
same family from it. Every method reports size on disk, parameter count, latency per batch and
eval loss before and after.

``quantize``
    ``dtype: int8`` — dynamic int8 (weights per output channel, activations per batch) of every
    ``nn.Linear``, run by torch's fbgemm/x86 kernels. ``dtype: int4`` — weight-only int4 in
    groups of ``group_size`` input columns (asymmetric, as torchao's tinygemm format) on torch's
    CPU int4 kernel; activations stay 16-bit, so it pays off for small batches, not for long
    prompts (see :mod:`workers.core.compress_quantize` for the measured numbers).
``prune``
    magnitude pruning of the decoder's linear layers to ``sparsity``: ``unstructured`` zeroes
    the smallest weights of each layer, ``structured`` whole output rows with the smallest L2
    norm. The zeros are made permanent; the report gives the measured sparsity.
``distill``
    knowledge distillation (Hinton et al. 2015): a student whose config is the teacher's with
    the fields in ``student`` replaced trains on ``alpha·T²·KL(teacher_T ‖ student_T) +
    (1 − alpha)·CE``, where ``_T`` is the softmax at temperature ``T``.

Like the finetune section, every rule compares values with defaults, never presence, because a
spec also validates when it comes back from its JSON form with the defaults written out.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.domain.spec_limits import check_free_map

DEFAULT_GROUP_SIZE: Final = 32
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5

STUDENT_FIELDS_FROM_TEACHER = ("vocab_size", "model_type")
"""Config fields a student must share with its teacher: it reads the teacher's tokenizer and is
of the same family, and the KL term compares distributions over one vocabulary."""


class CompressSpec(BaseModel):
    """How to compress the model in ``model.path``: the method and its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["quantize", "prune", "distill"]
    dtype: Literal["int8", "int4"] | None = Field(
        default=None, description="quantize: int8 (dynamic) or int4 (weight-only)"
    )
    group_size: Literal[32, 64, 128] = Field(
        default=DEFAULT_GROUP_SIZE,
        description="int4: input columns sharing one scale and zero (the kernel takes 32/64/128)",
    )
    sparsity: float | None = Field(
        default=None, ge=0.0, le=0.95, description="prune: fraction of weights set to zero"
    )
    structure: Literal["unstructured", "structured"] = Field(
        default="unstructured", description="prune: single weights, or whole rows by L2 norm"
    )
    student: dict[str, Any] | None = Field(
        default=None, description="distill: teacher config fields to change, e.g. hidden_size"
    )
    temperature: float = Field(default=DEFAULT_TEMPERATURE, gt=0.0, le=100.0)
    alpha: float = Field(
        default=DEFAULT_ALPHA, ge=0.0, le=1.0, description="distill: weight of the KL term"
    )
    latency_runs: int = Field(
        default=20, ge=1, le=10_000,
        description="timed forward passes of one batch; the report gives their median",
    )
    latency_threads: int | None = Field(
        default=None, ge=1, le=1024,
        description="CPU threads while timing; default: the rank's own (cores / local ranks)",
    )

    @field_validator("student")
    @classmethod
    def _student_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_free_map(value, "compress.student")
        return value

    @model_validator(mode="after")
    def _fields_match_method(self) -> CompressSpec:
        method = self.method
        if method == "quantize" and self.dtype is None:
            raise ValueError("compress.dtype is required with method: quantize (int8 or int4)")
        if method != "quantize" and self.dtype is not None:
            raise ValueError(f"compress.dtype is only for method: quantize, not {method}")
        if self.group_size != DEFAULT_GROUP_SIZE and self.dtype != "int4":
            raise ValueError("compress.group_size is only for method: quantize, dtype: int4")
        if method == "prune" and self.sparsity is None:
            raise ValueError("compress.sparsity is required with method: prune, e.g. 0.5")
        if method != "prune" and (self.sparsity is not None or self.structure != "unstructured"):
            raise ValueError(f"compress.sparsity and structure are only for method: prune, "
                             f"not {method}")
        if method == "distill":
            self._check_student()
        elif (self.student is not None or self.temperature != DEFAULT_TEMPERATURE
              or self.alpha != DEFAULT_ALPHA):
            raise ValueError(f"compress.student, temperature and alpha are only for method: "
                             f"distill, not {method}")
        return self

    def method_settings(self) -> dict[str, Any]:
        """The fields that configure this job's method (for reports), the method first."""
        names = {
            "quantize": ("dtype", "group_size") if self.dtype == "int4" else ("dtype",),
            "prune": ("sparsity", "structure"),
            "distill": ("student", "temperature", "alpha"),
        }[self.method]
        return {"method": self.method, **{name: getattr(self, name) for name in names},
                "latency_runs": self.latency_runs, "latency_threads": self.latency_threads}

    def _check_student(self) -> None:
        if not self.student:
            raise ValueError("compress.student is required with method: distill: the teacher "
                             "config fields to shrink, e.g. {num_hidden_layers: 2, "
                             "hidden_size: 64}")
        shared = sorted(set(self.student) & set(STUDENT_FIELDS_FROM_TEACHER))
        if shared:
            raise ValueError(f"compress.student may not set {', '.join(shared)}: the student "
                             f"shares the teacher's family and tokenizer")
