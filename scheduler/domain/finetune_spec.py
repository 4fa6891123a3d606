"""The ``finetune:`` section of a job spec: the task, the method (full or LoRA) and its settings.

Used only with ``kind: finetune``, whose ``model.path`` names the weights to start from. The
record fields say where each example's parts are in a JSONL file; the text of a classification
example (or of a plain causal-LM example) is ``data.text_field``, as for pretraining.

Every field also validates when a spec comes back from its JSON form (the job file the ranks
read), where defaults are written out; so rules compare values with defaults, never presence.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from scheduler.domain.spec_limits import MAX_LIST_ENTRIES, MAX_NAME_CHARS

DEFAULT_LABEL_FIELD = "label"
ModuleName = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]


class LoraSpec(BaseModel):
    """Low-rank adapters (Hu et al. 2021, peft ``LoraConfig``): ``W + (alpha / r)·B·A``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=8, ge=1, le=4096, description="rank of the adapter matrices")
    alpha: int = Field(default=16, ge=1, description="scale numerator: updates × alpha / r")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on adapter inputs")
    target_modules: list[ModuleName] | None = Field(
        default=None, max_length=MAX_LIST_ENTRIES,
        description="names of the linear layers to adapt; None: peft's default for the "
                    "architecture (llama: q_proj, v_proj; bert: query, value; gpt2: c_attn)",
    )

    @model_validator(mode="after")
    def _some_modules(self) -> LoraSpec:
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("finetune.lora.target_modules is empty; name modules or leave it out")
        return self


class FinetuneSpec(BaseModel):
    """What a finetune job learns (task) and which weights it changes (method)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["causal_lm", "classification"]
    method: Literal["full", "lora"] = "full"
    lora: LoraSpec | None = Field(
        default=None, description="with method lora; the defaults when left out"
    )
    merge_lora: bool = Field(
        default=True, description="merge the adapters into the weights and export the result"
    )
    num_labels: int | None = Field(default=None, ge=2, le=100_000)
    label_field: str = Field(default=DEFAULT_LABEL_FIELD, min_length=1,
                             max_length=MAX_NAME_CHARS)
    prompt_field: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    response_field: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneSpec:
        if self.task == "classification":
            if self.num_labels is None:
                raise ValueError("finetune.num_labels is required with task: classification")
            if self.prompt_field or self.response_field:
                raise ValueError("finetune.prompt_field / response_field are for task: "
                                 "causal_lm; a classification example is data.text_field")
        else:
            if self.num_labels is not None:
                raise ValueError("finetune.num_labels is only for task: classification")
            if self.label_field != DEFAULT_LABEL_FIELD:
                raise ValueError("finetune.label_field is only for task: classification")
            if (self.prompt_field is None) != (self.response_field is None):
                raise ValueError("give both finetune.prompt_field and finetune.response_field "
                                 "(instruction tuning) or neither (loss on all of data.text_field)")
        if self.method == "full" and self.lora is not None:
            raise ValueError("finetune.lora is only for method: lora")
        if self.method == "full" and not self.merge_lora:
            raise ValueError("finetune.merge_lora is only for method: lora")
        return self

    @property
    def instruction(self) -> bool:
        """Instruction tuning: loss only on the response of each prompt/response pair."""
        return self.prompt_field is not None

    @property
    def lora_settings(self) -> LoraSpec:
        """The LoRA settings, defaults filled in."""
        return self.lora or LoraSpec()
