"""A job spec sent over HTTP, checked and made ready for ``SchedulerService.submit_request``.

Beyond :func:`scheduler.domain.spec.parse_spec` a spec from the network must:

- hold only finite numbers (Python's JSON reader accepts NaN and Infinity, JSON does not);
- name files by absolute paths or ``pkg:`` / ``job:`` references: there is no job-file folder
  to resolve a relative path from, and the server's working directory means nothing to a client;
- leave ``tenant`` unset or name the caller's own tenant, unless the caller is an admin;
- ask for a number of steps the job row can store.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from api.model_inputs import model_profile_for, submit_profile
from scheduler.auth import Principal
from scheduler.cost.profile import ModelProfile
from scheduler.domain.errors import ForbiddenError, SpecError
from scheduler.domain.locations import is_job_ref, is_package_ref
from scheduler.domain.spec import JobSpec, parse_spec
from scheduler.service import SchedulerService

TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_TOTAL_STEPS = 2**31 - 1
"""The job row stores its step count in a 32-bit column."""

MODEL_INPUT_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError)
"""What reading a malformed model config (``hidden_size: "big"``, zero heads) raises."""


def request_sha256(spec: dict[str, Any]) -> str:
    """Digest of the spec as sent (canonical JSON): a repeated Idempotency-Key must come with
    the same spec."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_http_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a spec sent over HTTP (module docstring); SpecError says what to change."""
    try:
        _check_finite(data, "spec")
        spec = parse_spec(data)
    except OverflowError:
        raise SpecError("a number in the spec (a deadline, a count) is too large; use a smaller "
                        "one") from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply; a job spec is a few levels deep") from None
    for field, value in (("data.path", spec.data.path), ("model.path", spec.model.path),
                         ("tokenizer.path", spec.tokenizer.path)):
        if value and not (is_package_ref(value) or is_job_ref(value) or
                          Path(value).is_absolute()):
            raise SpecError(f"{field}: {value!r} is a relative path; a spec sent to the server "
                            f"must use an absolute path (or pkg:PACKAGE/FOLDER or job:NAME)")
    if not TENANT_NAME.match(spec.tenant):
        raise SpecError(f"tenant: {spec.tenant!r} is not a tenant name (letters, digits, '.', "
                        f"'_', '-'; at most 128)")
    if spec.total_steps() > MAX_TOTAL_STEPS:
        raise SpecError(f"work: {spec.total_steps()} steps is above the limit "
                        f"{MAX_TOTAL_STEPS}; ask for fewer steps or tokens")
    return spec


def spec_for(principal: Principal, data: dict[str, Any]) -> JobSpec:
    """The spec to submit for ``principal``: a member's job goes to its own tenant; an admin's
    to the spec's ``tenant`` (default ``default``)."""
    spec = parse_http_spec(data)
    if principal.is_admin:
        return spec
    if "tenant" in data and spec.tenant != principal.tenant:
        raise ForbiddenError(f"tenant: a member of {principal.tenant!r} may not submit for "
                             f"tenant {spec.tenant!r}; leave tenant out or ask an admin")
    return spec.model_copy(update={"tenant": principal.tenant})


def submit_model(service: SchedulerService, spec: JobSpec) -> ModelProfile | None:
    """The cost model's view of the spec's model, for submit (None: no prediction)."""
    service.check_files(spec)  # before the model's config is read from a path it names
    try:
        return submit_profile(service, spec)
    except MODEL_INPUT_ERRORS as err:
        raise _unreadable_model(err) from None


def plan_model(service: SchedulerService, spec: JobSpec) -> ModelProfile:
    """The cost model's view of the spec's model, for a dry-run plan."""
    service.check_files(spec)  # before the model's config is read from a path it names
    try:
        return model_profile_for(service, spec)
    except MODEL_INPUT_ERRORS as err:
        raise _unreadable_model(err) from None


def _unreadable_model(err: Exception) -> SpecError:
    return SpecError(f"model: the cost model cannot read this model's config "
                     f"({type(err).__name__}: {err}); check model.architecture and model.config")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: {value} is not a number JSON allows; give a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")
