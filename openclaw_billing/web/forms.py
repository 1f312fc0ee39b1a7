"""The console's forms: each is the admin API's input schema, unchanged, plus the form's CSRF
token, so a form is validated exactly as the API's JSON body is (bounds, one-line text,
times in the accepted window) before the same service method runs.

What differs is only how HTML sends values, translated before that validation
(:class:`FormInput`):

* every value is text: a field the JSON body takes as an integer (strict there, so ``"5"`` is
  refused) is read from its digits, and anything else is left for the schema to refuse;
* an empty input is not sent at all (FastAPI drops it): a field that may be null is null when
  empty (no expiry, the plan's rate limit);
* an HTML ``datetime-local`` input gives a time without a zone: the console takes it as
  **UTC**, and its pages say so; a time with a zone keeps it;
* a textarea of lines is a list: one entry per non-empty line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, StringConstraints, model_validator

from ..api.schemas import IsoDatetime
from ..api.schemas_admin import (
    CreditsAdd,
    KeyCreate,
    KeyExpiry,
    KeyRotate,
    PlanChange,
    PolicyUpdate,
)
from ..api.schemas_jobs import OutcomeReport
from ..audit import MAX_QUERY_OFFSET, AuditAction
from ..charges import MAX_JOB_ID_LENGTH
from ..plans import PlanId
from ..safetext import ONE_LINE
from ..store.query import MAX_SEARCH_LENGTH, ClientQuery, ClientSort, ClientStatus

#: Integers as a form sends them (bounded here only so ``int()`` is cheap; the schema bounds).
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")


class FormInput(BaseModel):
    """A form's fields: the CSRF token (checked by the signed-in dependency) and the HTML to
    JSON translation of the module docstring, driven by the subclass's class variables."""

    csrf_token: str = Field(max_length=128)

    #: Fields sent as digits that the schema takes as (strict) integers.
    integers: ClassVar[tuple[str, ...]] = ()
    #: Fields that are null when the input is empty (so not sent).
    nullable: ClassVar[tuple[str, ...]] = ()
    #: ``datetime-local`` fields: a time without a zone is UTC.
    utc_times: ClassVar[tuple[str, ...]] = ()
    #: Textarea fields: one list entry per non-empty line.
    line_lists: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_html(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        values = dict(data)
        for name in cls.nullable:
            values.setdefault(name, None)
        for name in cls.integers:
            values[name] = _integer(values.get(name))
        for name in cls.utc_times:
            values[name] = _utc_time(values.get(name))
        for name in cls.line_lists:
            if name in values:
                values[name] = _lines(values[name])
        return values


def _integer(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return value


def _utc_time(value: Any) -> Any:
    """A ``datetime-local`` value (no zone) as a UTC time; anything else as it came."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return value  # the schema refuses it with its own message
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else value


def _lines(value: Any) -> Any:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        return value
    return [line.strip() for line in _split(items) if line.strip()]


def _split(items: Iterable[str]) -> Iterable[str]:
    for item in items:
        yield from item.split("\n")


class CreditsForm(FormInput, CreditsAdd):
    integers = ("credits",)


class KeyCreateForm(FormInput, KeyCreate):
    utc_times = ("expires_at",)


class KeyRotateForm(FormInput, KeyRotate):
    integers = ("grace_seconds",)


class KeyExpiryForm(FormInput, KeyExpiry):
    nullable = ("expires_at",)
    utc_times = ("expires_at",)


class PlanForm(FormInput, PlanChange):
    pass


class PolicyForm(FormInput, PolicyUpdate):
    integers = ("rate_limit_per_minute",)
    nullable = ("rate_limit_per_minute",)
    line_lists = ("ip_allowlist",)


class OutcomeForm(FormInput, OutcomeReport):
    """A job's end as its runner reports it, for the job ``job_id`` of the page's client (so
    no ``client_id``), without measured usage (a runner's to report)."""

    job_id: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_JOB_ID_LENGTH, pattern=ONE_LINE)
    ]
    client_id: None = None
    usage: None = None
    nullable = ("failure_class",)


class GetFilters(BaseModel):
    """The filters of a page's GET form, which sends its empty fields as ``""``: no filter."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_none(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {name: value for name, value in data.items() if value != ""}


class AuditFilters(GetFilters):
    """The audit log page's filters: the query parameters of ``GET /api/admin/audit``, with
    the same constraints. ``since`` and ``until`` without a zone are UTC, as in the API."""

    client_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=ONE_LINE)] | None
    ) = None
    action: AuditAction | None = None
    since: IsoDatetime | None = None
    until: IsoDatetime | None = None
    offset: int = Field(default=0, ge=0, le=MAX_QUERY_OFFSET)


class ClientFilters(GetFilters):
    """The clients page's search, filters, order and page: the client query of
    ``GET /api/admin/clients``, with the same bounds."""

    q: Annotated[str, StringConstraints(max_length=MAX_SEARCH_LENGTH, pattern=ONE_LINE)] = ""
    plan: PlanId | None = None
    status: ClientStatus | None = None
    sort: ClientSort = ClientSort.CREATED
    offset: int = Field(default=0, ge=0, le=MAX_QUERY_OFFSET)

    def query(self, limit: int) -> ClientQuery:
        return ClientQuery(
            search=self.q.strip() or None,
            plan=self.plan,
            status=self.status,
            sort=self.sort,
            offset=self.offset,
            limit=limit,
        )

    def values(self) -> dict[str, str]:
        """The filters as the form shows them and the pager's links carry them (the page's
        offset apart; empty ones left out)."""
        found = {
            "q": self.q,
            "plan": self.plan.value if self.plan else "",
            "status": self.status.value if self.status else "",
            "sort": self.sort.value if self.sort != ClientSort.CREATED else "",
        }
        return {name: value for name, value in found.items() if value}


__all__ = [
    "AuditFilters",
    "ClientFilters",
    "CreditsForm",
    "FormInput",
    "KeyCreateForm",
    "KeyExpiryForm",
    "KeyRotateForm",
    "OutcomeForm",
    "PlanForm",
    "PolicyForm",
]
