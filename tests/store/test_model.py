"""A Hypothesis stateful test: every reply of the store is checked against a reference model
of the billing rules (charges, replays, limits, adjustments, refunds, cycle resets over moving
time), and the invariants hold after every step."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from openclaw_billing import cycles
from openclaw_billing.errors import (
    BillingError,
    ClientInactive,
    CreditLimitReached,
    InsufficientCredits,
    UnlimitedPlan,
)
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store, open_store
from openclaw_billing.store.json_file import JsonFileStore
from tests.backends import fresh_pg_url
from tests.invariants import check_record

JOB_IDS = st.sampled_from([f"job-{n}" for n in range(12)])
COSTS = st.sampled_from([0.0, 0.25, 1.5, 5.5])


@dataclass
class ModelClient:
    plan: PlanId
    start: datetime
    end: datetime
    credits: int | None
    active: bool = True
    total: float = 0.0
    current: dict[str, float] = field(default_factory=dict)
    previous: dict[str, float] = field(default_factory=dict)
    #: Every charged (and not refunded) job id, for backends that recognise them forever.
    ever: dict[str, float] = field(default_factory=dict)
    resets: int = 0

    def roll(self, now: datetime) -> None:
        if now < self.end:
            return
        self.previous = self.current
        self.current = {}
        self.credits = PLANS[self.plan].jobs_per_month
        self.start, self.end = cycles.cycle_containing(self.start, now)
        self.resets += 1


class BillingMachine(RuleBasedStateMachine):
    """Runs on the JSON store; subclasses below run the same rules on other backends."""

    clients = Bundle("clients")
    #: The JSON store recognises a job id in the current and the previous cycle; SQL forever.
    replay_forever = False

    def open_store(self) -> Store:
        return JsonFileStore(self.dir / "clients.json")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="oc-model-"))
        self.store = self.open_store()
        self.service = BillingService(self.store)
        self.now = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)
        self.model: dict[str, ModelClient] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(target=clients, plan=st.sampled_from(list(PlanId)))
    def first_client(self, plan: PlanId) -> str:
        return self._create(plan)

    @rule(target=clients, plan=st.sampled_from(list(PlanId)))
    def create(self, plan: PlanId) -> str:
        return self._create(plan)

    def _create(self, plan: PlanId) -> str:
        record, _ = self.service.create_client(
            name="M", email="m@acmecorp.com", plan=plan, now=self.now
        )
        allowance = PLANS[plan].jobs_per_month
        self.model[record.client_id] = ModelClient(
            plan, self.now, self.now + cycles.CYCLE_LENGTH, allowance
        )
        return record.client_id

    @rule(days=st.sampled_from([0.5, 3, 29.9, 30, 31, 95]))
    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)

    @rule(client_id=clients, job_id=JOB_IDS, cost=COSTS)
    def charge(self, client_id: str, job_id: str, cost: float) -> None:
        model = self.model[client_id]
        model.roll(self.now)
        expected: type[BillingError] | None = None
        first = model.current.get(job_id, model.previous.get(job_id))
        if first is None and self.replay_forever:
            first = model.ever.get(job_id)
        if first is None:
            if not model.active:
                expected = ClientInactive
            elif model.credits is not None and model.credits <= 0:
                expected = CreditLimitReached
        raised: type[BillingError] | None = None
        try:
            result = self.service.charge(client_id, job_id=job_id, cost=cost, now=self.now)
        except BillingError as exc:
            raised = type(exc)
        assert raised is expected
        if raised is not None:
            return
        if first is not None:
            assert result.replayed
            assert result.cost == first
            return
        assert not result.replayed
        model.current[job_id] = cost
        model.ever[job_id] = cost
        model.total += cost
        if model.credits is not None:
            model.credits -= 1
        assert result.credits_remaining == model.credits

    @rule(client_id=clients, amount=st.integers(-60, 60).filter(bool))
    def add_credits(self, client_id: str, amount: int) -> None:
        model = self.model[client_id]
        model.roll(self.now)
        expected: type[BillingError] | None = None
        if model.credits is None:
            expected = UnlimitedPlan
        elif model.credits + amount < 0:
            expected = InsufficientCredits
        raised: type[BillingError] | None = None
        try:
            record = self.service.add_credits(client_id, amount, "model", now=self.now)
        except BillingError as exc:
            raised = type(exc)
        assert raised is expected
        if raised is not None:
            return
        assert model.credits is not None
        model.credits += amount
        assert record.credits_remaining == model.credits

    @rule(client_id=clients, job_id=JOB_IDS)
    def refund(self, client_id: str, job_id: str) -> None:
        model = self.model[client_id]
        model.roll(self.now)
        expected = job_id in model.current
        assert self.service.refund(client_id, job_id, now=self.now) is expected
        if expected:
            model.total -= model.current.pop(job_id)
            model.ever.pop(job_id, None)
            if model.credits is not None:
                model.credits += 1

    @rule(client_id=clients, active=st.booleans())
    def set_active(self, client_id: str, active: bool) -> None:
        self.model[client_id].roll(self.now)
        self.service.set_active(client_id, active, now=self.now)
        self.model[client_id].active = active

    @rule(client_id=clients)
    def read(self, client_id: str) -> None:
        self.model[client_id].roll(self.now)
        record = self.service.get_client(client_id, now=self.now)
        assert record.credits_remaining == self.model[client_id].credits

    @invariant()
    def store_matches_model(self) -> None:
        reopened = self.open_store()  # what a restart would see
        for client_id, model in self.model.items():
            record = reopened.get_client(client_id)
            assert record is not None
            check_record(record)
            assert record.credits_remaining == model.credits
            assert record.active == model.active
            assert [e.job_id for e in record.metadata.cost_log] == list(model.current)
            assert abs(record.total_spent - model.total) < 1e-6
            assert len(record.metadata.cycle_history) == model.resets
            assert (record.billing_cycle_start, record.billing_cycle_end) == (
                model.start,
                model.end,
            )
        reopened.close()


class SqliteBillingMachine(BillingMachine):
    replay_forever = True

    def open_store(self) -> Store:
        return open_store(f"sqlite:///{self.dir}/billing.db")


class PostgresBillingMachine(BillingMachine):
    """A fresh schema per example, dropped at its teardown."""

    replay_forever = True

    _schema: ExitStack | None = None

    def open_store(self) -> Store:
        if self._schema is None:  # the first opening makes the schema; a reopening uses it
            self._schema = ExitStack()
            self._url = self._schema.enter_context(fresh_pg_url())
        return open_store(self._url)

    def teardown(self) -> None:
        super().teardown()
        if self._schema is not None:
            self._schema.close()


_settings = settings(max_examples=60, stateful_step_count=40, deadline=None, derandomize=True)
BillingMachine.TestCase.settings = _settings
SqliteBillingMachine.TestCase.settings = settings(_settings, max_examples=30)
PostgresBillingMachine.TestCase.settings = settings(_settings, max_examples=15)
TestBillingModel = BillingMachine.TestCase
TestBillingModelSqlite = SqliteBillingMachine.TestCase
TestBillingModelPostgres = PostgresBillingMachine.TestCase
