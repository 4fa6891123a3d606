"""Size limits of a job spec (scheduler.domain.spec_limits): every string, list, env entry and
free map has a bound; a spec past one is refused with the field and the limit, never with a
secret env value, and a spec at every bound is still valid."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import parse_spec
from scheduler.domain.spec_limits import (
    MAX_ENV_ENTRIES,
    MAX_ENV_TOTAL_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_MAP_DEPTH,
    MAX_MAP_KEYS,
    MAX_MAP_LIST_ENTRIES,
    MAX_MAP_VALUES,
)
from tests.builders import spec_dict

SECRET = "s3cr3t-value-"


def nested(depth: int) -> dict[str, Any]:
    """A map ``depth`` levels deep: {"a": {"a": ... {"a": 1}}}."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def distill(student: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "compress", "model": {"path": "/weights"},
            "compress": {"method": "distill", "student": student}}


def lora(modules: list[str]) -> dict[str, Any]:
    return {"kind": "finetune", "model": {"path": "/weights"}, "tokenizer": {"kind": "model"},
            "data": {"path": "/data/train.jsonl"},
            "finetune": {"task": "causal_lm", "method": "lora",
                         "lora": {"target_modules": modules}}}


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    return {"model": {"architecture": "llama", "config": config}}


TOO_BIG: list[tuple[str, dict[str, Any], list[str]]] = [
    ("too many env entries", {"env": {f"E{i}": "" for i in range(5000)}},
     ["env: 5000 variables", f"limit of {MAX_ENV_ENTRIES}"]),
    ("env name too long", {"env": {"A" * 300: "x"}}, ["env: the name 'AAAA", "300 characters"]),
    ("env value too large", {"env": {"CERT": SECRET * 3000}},
     ["env.CERT: its value has 39000 bytes", f"limit of {MAX_ENV_VALUE_BYTES}"]),
    ("secret env value too large",
     {"env": {"TOKEN": {"value": SECRET * 3000, "secret": True}}},
     ["env.TOKEN: its value has 39000 bytes"]),
    ("env too large in all", {"env": {f"E{i}": SECRET * 2000 for i in range(12)}},
     ["env: names and values hold", f"limit of {MAX_ENV_TOTAL_BYTES}"]),
    ("data path too long", {"data__path": "/d/" + "a" * 5000 + ".txt"},
     ["data.path", "at most 4096 characters", "(5007 characters)"]),
    ("model path too long", {"model": {"path": "/" + "m" * 5000}}, ["model.path", "4096"]),
    ("tokenizer path too long", {"tokenizer": {"kind": "path", "path": "/" + "t" * 5000}},
     ["tokenizer.path", "4096"]),
    ("text field too long", {"data__text_field": "t" * 200}, ["data.text_field", "128"]),
    ("tenant too long", {"tenant": "t" * 200}, ["tenant", "128"]),
    ("pool too long", {"resources__pool": "p" * 200}, ["resources.pool", "128"]),
    ("accelerator too long", {"resources__accelerator": "a" * 200},
     ["resources.accelerator", "128"]),
    ("architecture too long", {"model": {"architecture": "a" * 200}},
     ["model.architecture", "128"]),
    ("deadline too long", {"deadline": "1" * 100 + "h"}, ["deadline", "at most 64"]),
    ("config too wide", architecture({f"k{i}": 1 for i in range(MAX_MAP_KEYS + 1)}),
     ["model.config: 257 keys", f"limit of {MAX_MAP_KEYS}"]),
    ("config too deep", architecture(nested(MAX_MAP_DEPTH + 1)),
     ["model.config.a.a.a.a: nested more than 4 levels deep"]),
    ("config string too long", architecture({"chat_template": "x" * 5000}),
     ["model.config.chat_template: a string of 5000 characters"]),
    ("config list too long", architecture({"layer_types": ["full"] * 2000}),
     ["model.config.layer_types: a list of 2000 entries", str(MAX_MAP_LIST_ENTRIES)]),
    ("config too many values", architecture({f"k{i}": [0] * 200 for i in range(30)}),
     [f"more than {MAX_MAP_VALUES} values in all"]),
    ("config key too long", architecture({"k" * 200: 1}), ["model.config: the key 'kkkk"]),
    ("student too wide", distill({f"k{i}": 1 for i in range(300)}),
     ["compress.student: 300 keys"]),
    ("too many lora modules", lora([f"m{i}" for i in range(65)]),
     ["finetune.lora.target_modules", "at most 64"]),
    ("lora module name too long", lora(["m" * 200]), ["finetune.lora.target_modules.0", "128"]),
    ("label field too long",
     {"kind": "finetune", "model": {"path": "/weights"}, "data": {"path": "/d.jsonl"},
      "finetune": {"task": "classification", "num_labels": 2, "label_field": "l" * 200}},
     ["finetune.label_field", "128"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), TOO_BIG,
                         ids=[case for case, _, _ in TOO_BIG])
def test_a_spec_above_a_limit_is_refused_naming_the_field_and_the_limit(
        case: str, overrides: dict[str, Any], fragments: list[str]) -> None:
    data = spec_dict(**{key: value for key, value in overrides.items() if "__" in key})
    data.update({key: value for key, value in overrides.items() if "__" not in key})
    with pytest.raises(SpecError) as raised:
        parse_spec(data)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in {message}"
    assert SECRET not in message, f"{case}: an env value was echoed"
    assert len(message) < 600, f"{case}: the message repeats the input ({len(message)} chars)"


def test_a_spec_at_every_env_bound_is_valid() -> None:
    # 128 variables of 1,500 bytes and one near the value limit: 220 KiB in all.
    env = {f"VAR_{i:03d}": "v" * 1500 for i in range(MAX_ENV_ENTRIES)}
    env["CERT"] = "c" * (MAX_ENV_VALUE_BYTES - 4096)
    env.pop("VAR_000")
    spec = parse_spec({**spec_dict(), "env": env})
    assert len(spec.env) == MAX_ENV_ENTRIES


def test_a_model_config_at_its_bounds_is_valid() -> None:
    config = {"rope_scaling": nested(MAX_MAP_DEPTH - 1), "layer_types": ["full"] * 1000,
              **{f"k{i}": i for i in range(MAX_MAP_KEYS - 2)}}
    spec = parse_spec({**spec_dict(), **architecture(config)})
    assert spec.model.config["layer_types"] == ["full"] * 1000


def test_an_env_value_in_an_unrelated_error_is_never_echoed() -> None:
    data = {**spec_dict(), "env": {"TOKEN": {"value": SECRET, "secret": "maybe"}}}
    with pytest.raises(SpecError) as raised:
        parse_spec(data)
    assert "env.TOKEN" in str(raised.value) and SECRET not in str(raised.value)
