"""Typed Python SDK of the Corral REST API (synchronous, over httpx); the CLI's server mode.

``CorralClient(url, token).submit(spec_dict)`` answers ``{"id", "name", "state", "created"}``;
every method mirrors one route of the ``/v1`` contract (docs/api.md) and returns its JSON.
``submit`` sends an ``Idempotency-Key`` (a new uuid4 unless given) and retries connection errors
and 503 with the same key, so a retried submission never makes a second job; reads retry the
same way; other writes are sent once.

Errors carry the server's own message, which says what to change::

    CorralError                 (scheduler.domain.errors)
    └── ApiError                status, code, message
        ├── Unauthorized        401: no token, or a wrong or revoked one
        ├── Forbidden           403: an admin route, another tenant, a priority above the cap
        ├── NotFound            404: missing, or another tenant's (the two look alike)
        ├── Conflict            409: an idempotency key reused with another body, a taken name
        ├── InvalidRequest      422: invalid_request, invalid_spec, unschedulable
        ├── RateLimited         429: a tenant limit; ``retry_after_s`` says when to try again
        └── Unavailable         5xx, or the server could not be reached (status 0)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from scheduler.domain.errors import CorralError

Json = dict[str, Any]
RETRIED_ATTEMPTS = 4
RETRY_BACKOFF_S = 0.5
"""First pause before a retry; it doubles each time (0.5, 1, 2 s: 3.5 s in all)."""


class ApiError(CorralError):
    """The server refused a request, or could not be reached; ``str()`` is its message."""

    def __init__(self, status: int, code: str, message: str,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class Unauthorized(ApiError):
    """401: the request carried no token, or one the server does not know (or revoked)."""


class Forbidden(ApiError):
    """403: the token's role or tenant does not allow this."""


class NotFound(ApiError):
    """404: no such job, pool, node, quota or token visible to this token's tenant."""


class Conflict(ApiError):
    """409: the request contradicts what the server stores."""


class InvalidRequest(ApiError):
    """422: the body or parameters fail the schema, or the job spec is invalid or fits nowhere."""


class RateLimited(ApiError):
    """429: a tenant limit is reached; try again after ``retry_after_s`` seconds."""


class Unavailable(ApiError):
    """5xx, or no answer at all (status 0, code ``unreachable``)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: InvalidRequest,
    429: RateLimited,
}


class CorralClient:
    """One Corral server, one token; thread-safe as its ``httpx.Client`` is."""

    def __init__(self, server_url: str, token: str | None = None, timeout_s: float = 30,
                 transport: httpx.BaseTransport | None = None,
                 retry_backoff_s: float = RETRY_BACKOFF_S,
                 retried_attempts: int = RETRIED_ATTEMPTS) -> None:
        self.server_url = server_url.rstrip("/")
        self.retry_backoff_s = retry_backoff_s
        self.retried_attempts = max(1, retried_attempts)
        headers = {"User-Agent": "corral-sdk"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server_url, headers=headers, timeout=timeout_s,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CorralClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- jobs ------------------------------------------------------------------------------

    def whoami(self) -> Json:
        return self._call("GET", "/v1/whoami")

    def submit(self, spec: Json, idempotency_key: str | None = None) -> Json:
        """Queue a job; a retry (ours or the caller's, with the same key) returns the same job
        with ``created: false``."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/jobs", json={"spec": spec},
                          headers={"Idempotency-Key": key}, retry=True)

    def list_jobs(self, states: list[str] | None = None, all: bool = False,
                  name: str | None = None, tenant: str | None = None, limit: int = 50,
                  before_id: int | None = None) -> Json:
        """One page, newest first: ``{"items": [...], "next_before_id": int | None}``."""
        params = _given(limit=limit, name=name, tenant=tenant, before_id=before_id)
        if states:
            params["state"] = list(states)
        if all:
            params["all"] = "true"
        return self._call("GET", "/v1/jobs", params=params)

    def iter_jobs(self, states: list[str] | None = None, all: bool = False,
                  name: str | None = None, tenant: str | None = None,
                  page_size: int = 200) -> Iterator[Json]:
        """Every matching job, newest first, fetching pages as they are needed."""
        before_id: int | None = None
        while True:
            page = self.list_jobs(states, all, name, tenant, page_size, before_id)
            yield from page["items"]
            before_id = page.get("next_before_id")
            if before_id is None:
                return

    def get_job(self, job_id: int) -> Json:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: int) -> Json:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: int) -> list[Json]:
        return _items(self._call("GET", f"/v1/jobs/{job_id}/events"))

    def explain(self, job_id: int) -> Json:
        return self._call("GET", f"/v1/jobs/{job_id}/explain")

    def logs(self, job_id: int, attempt: int | None = None, offset: int = 0,
             max_bytes: int = 65536) -> Json:
        """Up to ``max_bytes`` of an attempt's log from byte ``offset``; ``offset`` in the
        answer is where the next call starts."""
        params = _given(attempt=attempt, offset=offset, max_bytes=max_bytes)
        return self._call("GET", f"/v1/jobs/{job_id}/logs", params=params)

    def plan(self, spec: Json) -> Json:
        return self._call("POST", "/v1/plan", json={"spec": spec}, retry=True)

    # --- cluster and tenancy (most writes are admin-only) ----------------------------------

    def pools(self) -> list[Json]:
        return _items(self._call("GET", "/v1/pools"))

    def add_pool(self, name: str, backend: str, accelerator: str, nodes: int,
                 devices_per_node: int, price_per_device_hour: float | None = None,
                 peak_tflops: float | None = None,
                 backend_settings: dict[str, str] | None = None) -> Json:
        body = _given(name=name, backend=backend, accelerator=accelerator, nodes=nodes,
                      devices_per_node=devices_per_node,
                      price_per_device_hour=price_per_device_hour, peak_tflops=peak_tflops,
                      backend_settings=backend_settings or None)
        return self._call("POST", "/v1/pools", json=body)

    def sync_pools(self, settings: dict[str, str], prefix: str = "ray",
                   cpu_peak_tflops: float | None = None) -> list[Json]:
        body = _given(backend="ray", backend_settings=settings, prefix=prefix,
                      cpu_peak_tflops=cpu_peak_tflops)
        return _items(self._call("POST", "/v1/pools/sync", json=body))

    def nodes(self, pool: str | None = None) -> list[Json]:
        return _items(self._call("GET", "/v1/nodes", params=_given(pool=pool)))

    def cordon(self, node: str) -> Json:
        return self._call("POST", f"/v1/nodes/{node}/cordon")

    def uncordon(self, node: str) -> Json:
        return self._call("POST", f"/v1/nodes/{node}/uncordon")

    def drain(self, node: str) -> Json:
        return self._call("POST", f"/v1/nodes/{node}/drain")

    def tenants(self) -> list[Json]:
        return _items(self._call("GET", "/v1/tenants"))

    def set_tenant(self, name: str, cohort: str | None = None, weight: float | None = None,
                   max_pending_jobs: int | None = None,
                   submissions_per_minute: int | None = None, max_priority: int | None = None,
                   clear_cohort: bool = False, job_user: str | None = None,
                   data_roots: list[str] | None = None, model_roots: list[str] | None = None,
                   clear: tuple[str, ...] = ()) -> Json:
        """Create or change a tenant; fields left None are not sent (they stay as they are),
        ``clear_cohort`` sends ``"cohort": null``, and so does ``clear`` for each field it
        names (``job_user``, ``data_roots``, ``model_roots``: back to the server's)."""
        body = _given(cohort=cohort, weight=weight, max_pending_jobs=max_pending_jobs,
                      submissions_per_minute=submissions_per_minute, max_priority=max_priority,
                      job_user=job_user, data_roots=data_roots, model_roots=model_roots)
        if clear_cohort:
            body["cohort"] = None
        for field in clear:
            body[field] = None
        return self._call("PUT", f"/v1/tenants/{name}", json=body)

    def quotas(self) -> list[Json]:
        return _items(self._call("GET", "/v1/quotas"))

    def set_quota(self, accelerator: str, nominal: int, tenant: str | None = None,
                  cohort: str | None = None, borrowing_limit: int | None = None,
                  lending_limit: int | None = None) -> Json:
        body = _given(tenant=tenant, cohort=cohort, accelerator=accelerator, nominal=nominal,
                      borrowing_limit=borrowing_limit, lending_limit=lending_limit)
        return self._call("PUT", "/v1/quotas", json=body)

    def delete_quota(self, accelerator: str, tenant: str | None = None,
                     cohort: str | None = None) -> None:
        params = _given(tenant=tenant, cohort=cohort, accelerator=accelerator)
        self._call("DELETE", "/v1/quotas", params=params)

    def tokens(self, tenant: str | None = None) -> list[Json]:
        """Every token (of ``tenant``): prefixes only, never the tokens themselves."""
        return _items(self._call("GET", "/v1/tokens", params=_given(tenant=tenant)))

    def issue_token(self, tenant: str, role: str = "member", name: str | None = None) -> Json:
        """A new token: the answer's ``token`` is the only time the plain token is shown."""
        return self._call("POST", "/v1/tokens", json=_given(tenant=tenant, role=role, name=name))

    def revoke_token(self, token_id: int) -> Json:
        return self._call("DELETE", f"/v1/tokens/{token_id}")

    def calibration(self) -> list[Json]:
        """Every measured efficiency η, with its weight and the prior it replaces."""
        return _items(self._call("GET", "/v1/admin/calibration"))

    def reset_calibration(self, accelerator: str | None = None, strategy: str | None = None,
                          kind: str | None = None) -> Json:
        """Delete the calibration rows matching every filter given (all rows without one)."""
        params = _given(accelerator=accelerator, strategy=strategy, kind=kind)
        return self._call("DELETE", "/v1/admin/calibration", params=params)

    # --- transport -------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Json | None = None, headers: dict[str, str] | None = None,
              retry: bool | None = None) -> Json:
        """Send one request; retry connection errors and 503 for reads and keyed submits."""
        attempts = self.retried_attempts if (retry or (retry is None and method == "GET")) else 1
        pause_s = self.retry_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, path, params=params, json=json,
                                              headers=headers)
            except httpx.TransportError as err:
                if attempt == attempts:
                    raise self._unreachable(err) from None
            else:
                if response.status_code != 503 or attempt == attempts:
                    return self._answer(response)
                pause_s = max(pause_s, _retry_after_s(response) or 0.0)
            time.sleep(pause_s)
            pause_s *= 2
        raise AssertionError("unreachable: the loop returns or raises")

    def _answer(self, response: httpx.Response) -> Json:
        if response.status_code < 400:
            return response.json() if response.content else {}
        code, message = _error_of(response)
        kind = _BY_STATUS.get(response.status_code,
                              Unavailable if response.status_code >= 500 else ApiError)
        retry_after = _retry_after_s(response) if response.status_code == 429 else None
        raise kind(response.status_code, code, message, retry_after)

    def _unreachable(self, err: httpx.TransportError) -> Unavailable:
        if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout):
            message = (f"cannot reach the Corral server at {self.server_url}: {err}; "
                       f"is `corral server` running?")
        else:
            message = (f"the Corral server at {self.server_url} did not answer "
                       f"({type(err).__name__}: {err}); try again")
        return Unavailable(0, "unreachable", message)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of an error answer, also from a proxy that answers in plain text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code", "error")), str(error.get("message", ""))
    text = response.text.strip()[:300] or response.reason_phrase
    return "error", f"HTTP {response.status_code} from {response.request.url}: {text}"


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and a guess of our own backoff is as good


def _items(body: Json | list[Json]) -> list[Json]:
    return body if isinstance(body, list) else list(body.get("items", []))


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}
