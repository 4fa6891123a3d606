"""The cost model's view of a job's model, as the CLI and the REST API hand it to the scheduler.

``model.path: job:NAME`` names the export of an earlier job. Once NAME has succeeded its export
folder holds the config; before that (``corral plan pretrain.yaml finetune.yaml``, or NAME still
queued) the config NAME's own spec will train stands in for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from scheduler.cost.profile import ModelProfile
from scheduler.db import repo
from scheduler.domain.errors import SpecError
from scheduler.domain.locations import is_job_ref, job_ref_name
from scheduler.domain.spec import JobSpec, parse_spec
from scheduler.service import SchedulerService

log = logging.getLogger("corral.cli")


def model_config_for(service: SchedulerService, spec: JobSpec,
                     earlier: Mapping[str, JobSpec] | None = None) -> dict[str, Any]:
    """The full transformers config of the model ``spec`` starts from."""
    from workers.model_config import resolved_model_config

    path = spec.model.path
    if path is None or not is_job_ref(path):
        return resolved_model_config(spec)
    try:
        return resolved_model_config(service.resolve_job_reference(spec))
    except SpecError:
        name = job_ref_name(path)
        source = (earlier or {}).get(name)
        if source is None:
            with service.db.read() as session:
                queued = repo.latest_job_named(session, spec.tenant, name)
                source = JobSpec.model_validate(queued.spec) if queued is not None else None
        if source is None:
            raise SpecError(
                f"model.path: {path}: no job named {name!r} has run or is queued; to plan "
                f"before it runs, name its file first: corral plan {name}.yaml THIS.yaml"
            ) from None
        return model_config_for(service, source, earlier)


def model_profile_for(service: SchedulerService, spec: JobSpec,
                      earlier: Mapping[str, JobSpec] | None = None) -> ModelProfile:
    """The planner's view of what ``spec`` runs (raises SpecError for an unknown model)."""
    from workers.model_config import planning_profile

    return planning_profile(spec, model_config_for(service, spec, earlier))


def submit_profile(service: SchedulerService, spec: JobSpec) -> ModelProfile | None:
    """The profile to submit ``spec`` with; None (no prediction, data parallel) for a model the
    cost model cannot describe, which must not stop the job from running."""
    try:
        return model_profile_for(service, spec)
    except SpecError as err:
        if spec.model.path is not None and is_job_ref(spec.model.path):
            raise  # submit says the same about the reference, more usefully
        log.warning("%s: no cost-model prediction: %s", spec.name, err)
        return None


def warm_up() -> None:
    """Import what planning a submission needs (transformers' config classes) now, so that a
    server's first submissions do not each wait seconds for it."""
    from workers.model_config import resolved_model_config

    resolved_model_config(parse_spec({
        "name": "warm-up", "kind": "pretrain",
        "model": {"architecture": "llama", "config": {"hidden_size": 8, "num_hidden_layers": 1,
                                                       "num_attention_heads": 1}},
        "data": {"source": "generated", "seq_len": 8}, "work": {"steps": 1}}))
