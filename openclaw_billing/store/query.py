"""What the operator's reads ask the store: a page of clients (:class:`ClientQuery`) and the
figures of the whole store (:class:`StoreOverview`). Plain values, checked when made; every
backend answers them alike (the JSON store over its records in memory, :mod:`.json_query`; SQL
with statements, :mod:`.sql_query`), and the contract suite holds their answers equal.

The rules, once, for every backend:

* **search** is a case-insensitive substring of the name or the email (both sides folded with
  :func:`fold`, Python's ``str.casefold``, so every backend folds the same way), or a prefix of
  the client id (exact case; a whole id is a prefix of itself). Every character is literal:
  ``%``, ``_`` and ``\\`` mean themselves.
* **status** (:class:`ClientStatus`) and the filters read the record as stored: a cycle that
  has ended but not yet been rolled (see ``Store.refresh_cycle``) still shows its stored
  credits and ledger here, while the service shows each client of the page reset.
* **usage** (:attr:`ClientSort.USAGE`) is the number of jobs in the client's stored cycle
  (its ledger entries: held, charged or released). One rule for every plan, so the order is
  well defined; the credits those jobs take (:func:`openclaw_billing.ledger.credits_used`)
  differ with prices and releases.
* Every order ends with creation order, so equal keys keep a stable page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from ..audit import MAX_QUERY_LIMIT, MAX_QUERY_OFFSET
from ..ledger import UNPAID_STATUSES
from ..plans import PlanId
from ..safetext import is_one_line

__all__ = [
    "FIRST_PAGE",
    "MAX_SEARCH_LENGTH",
    "OVERVIEW_DAYS",
    "PAST_DUE_STATUSES",
    "PAYING_STATUSES",
    "ClientQuery",
    "ClientSort",
    "ClientStatus",
    "DayJobs",
    "PlanFigures",
    "StoreOverview",
    "day_start",
    "fold",
    "overview_days",
]

MAX_SEARCH_LENGTH = 200
#: The days of :attr:`StoreOverview.jobs_by_day`, ending with today's UTC date.
OVERVIEW_DAYS = 30
#: Subscription states in which a client pays (or is asked to): what recurring revenue counts.
PAYING_STATUSES = frozenset({"active", "trialing", "past_due"})
#: Subscription states of :attr:`ClientStatus.PAST_DUE` (those the charge refuses as unpaid).
PAST_DUE_STATUSES = UNPAID_STATUSES


class ClientStatus(StrEnum):
    """A client's standing, as a filter."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    #: The Stripe subscription is ``past_due`` or ``unpaid`` (active or not).
    PAST_DUE = "past_due"
    #: Active, on a limited plan, with no credit left.
    AT_LIMIT = "at_limit"


class ClientSort(StrEnum):
    """The orders of a page of clients; each ends with creation order."""

    #: Oldest first (creation order): the default.
    CREATED = "created"
    NEWEST = "newest"
    #: By name, case-insensitively (folded names, compared by code point).
    NAME = "name"
    #: Fewest credits left first; unlimited plans last.
    CREDITS_LEFT = "credits_left"
    #: Most jobs charged in the stored cycle first (see the module docstring).
    USAGE = "usage"
    #: Largest ``total_spent`` first.
    SPEND = "spend"


def fold(text: str) -> str:
    """The case-insensitive form of a name, an email or a search (``str.casefold``)."""
    return text.casefold()


@dataclass(frozen=True, kw_only=True)
class ClientQuery:
    """Which clients, in which order, which page. The default is every client in creation
    order, the first 100. Filters combine (all must hold); ``search`` None or empty matches
    every client. Raises ``ValueError`` for a query no backend should be asked (the HTTP layer
    refuses the same bounds first, with a 422)."""

    search: str | None = None
    plan: PlanId | None = None
    active: bool | None = None
    status: ClientStatus | None = None
    sort: ClientSort = ClientSort.CREATED
    offset: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= MAX_QUERY_OFFSET:
            raise ValueError(f"offset must be between 0 and {MAX_QUERY_OFFSET}")
        if not 0 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 0 and {MAX_QUERY_LIMIT}")
        if self.search is not None and (
            len(self.search) > MAX_SEARCH_LENGTH or not is_one_line(self.search)
        ):
            raise ValueError(f"search must be one line of at most {MAX_SEARCH_LENGTH} characters")

    @property
    def needle(self) -> str | None:
        """The search as given, or None when it matches every client."""
        return self.search or None


#: ``ClientQuery()``: every client in creation order, the first 100 (the default of a listing).
FIRST_PAGE = ClientQuery()


@dataclass(frozen=True)
class PlanFigures:
    """One plan's clients: how many are active and inactive, and how many pay for it through
    a Stripe subscription (a subscription id and a status in :data:`PAYING_STATUSES`, whether
    the client is active or not)."""

    plan: PlanId
    active: int
    inactive: int
    paying: int


@dataclass(frozen=True)
class DayJobs:
    """Jobs charged on one UTC date."""

    day: date
    jobs: int


@dataclass(frozen=True)
class StoreOverview:
    """The figures of the whole store at ``now``, as stored (a cycle not yet rolled counts as
    it stands; see the module docstring).

    * ``plans``: every plan of the catalogue, in catalogue order, zeros included;
    * ``jobs_this_cycle``: ledger entries of the active clients' stored cycles;
      ``credits_used_this_cycle``: the credits those cycles' jobs take on the limited plans
      (:func:`openclaw_billing.ledger.credits_used`: allowance + adjustments - credits left);
    * ``at_limit`` and ``past_due``: the clients of those :class:`ClientStatus`;
    * ``jobs_by_day``: :data:`OVERVIEW_DAYS` UTC dates, oldest first, ending with ``now``'s,
      zeros included, counted from the ledger entries a store keeps for every client: its
      stored cycle's and the cycle before it (the newest summary's). A refunded job has left
      the ledger and is not counted; older cycles are summaries without dates, so a client
      whose cycles were shorter than the window (a plan change starts one) shows only its
      last two of them. Every client counts, active or not.
    """

    plans: tuple[PlanFigures, ...]
    jobs_this_cycle: int
    credits_used_this_cycle: int
    at_limit: int
    past_due: int
    jobs_by_day: tuple[DayJobs, ...]


def overview_days(now: datetime) -> tuple[date, ...]:
    """The dates of :attr:`StoreOverview.jobs_by_day` at ``now``, oldest first (UTC)."""
    today = now.astimezone(UTC).date()
    return tuple(today - timedelta(days=n) for n in range(OVERVIEW_DAYS - 1, -1, -1))


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), UTC)
