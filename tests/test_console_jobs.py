"""The client's jobs on its console page, over HTTP (openclaw_billing/web/console_client.py,
the report form in console_actions.py, the service's read in openclaw_billing/job_reads.py):
the credits held now, each job's status and receipt newest first with its holds marked, the
section paged (htmx swaps it alone), hostile text escaped, and an open job's end reported
through the form as the runner would, audited as the console; a refused report changes
nothing."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openclaw_billing.audit import AuditAction
from openclaw_billing.jobs import (
    UNCONFIRMED,
    JobStatus,
    MeterReport,
    MeterState,
    Receipt,
    StoredJob,
)
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService, get_service, set_service
from openclaw_billing.store import JsonFileStore
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.web import console_client
from tests.console_pages import ESCAPED, HOSTILE, Console, open_console
from tests.primitives_only import PrimitivesOnly
from tests.test_console import assert_safe_page


@pytest.fixture
def console(http: TestClient, service: BillingService) -> Console:
    return open_console(http, service)


def reserve(console: Console, job_id: str, price: int) -> None:
    console.service.reserve(console.client_id, job_id=job_id, price=price)


def stored_job(service: BillingService, client_id: str, job_id: str) -> StoredJob:
    store = service.store
    assert isinstance(store, JobStorage)
    job = store.get_job(client_id, job_id)
    assert job is not None
    return job


def import_jobs(console: Console, jobs: list[StoredJob]) -> None:
    """Store jobs as they are (a receipt the service would never write, a past cycle's)."""
    store = console.service.store
    assert isinstance(store, JobStorage)
    assert store.import_jobs(jobs) == len(jobs)


def end(console: Console, job_id: str, status: JobStatus, failure: str | None = None) -> None:
    console.service.report_job(job_id, Report(status, failure), client_id=console.client_id)


def job_rows(page: str) -> dict[str, list[str]]:
    """The Jobs table's rows by job id: each cell's text (the row's class first)."""
    [table] = re.findall(r'<table class="outcomes">.*?</table>', page, re.S)
    rows = {}
    for attrs, row in re.findall(r"<tr( [^>]*)?>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", c)).strip() for c in _cells(row)]
        rows[html.unescape(cells[0])] = [attrs.strip(), *cells[1:]]
    return rows


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def listed(page: str) -> list[str]:
    return list(job_rows(page))


# -- what the section shows ------------------------------------------------------------------


def test_the_page_shows_credits_held_and_each_jobs_status_and_receipt(console: Console) -> None:
    reserve(console, "job-held", 3)
    reserve(console, "job-infra", 2)
    end(console, "job-infra", JobStatus.FAILED, "infrastructure")
    reserve(console, "job-ok", 4)
    end(console, "job-ok", JobStatus.SUCCEEDED)
    answer = console.http.get(console.url)
    page = answer.text
    assert '<dd data-held="3">3 credits held by open jobs</dd>' in page
    assert "3 jobs this cycle or still open" in page
    assert '<span data-holding="1">1 of them holding credits</span>' in page
    rows = job_rows(page)
    assert list(rows) == ["job-ok", "job-infra", "job-held"]  # newest first
    held = stored_job(console.service, console.client_id, "job-held").receipt
    assert held is not None
    assert rows["job-held"][2:7] == [
        "queued holding",
        "3",
        "",
        "",
        f"Held until {held.hold_until:%Y-%m-%d %H:%M:%S}",
    ]
    assert rows["job-held"][0] == 'class="holding"'
    assert rows["job-infra"][0] == ""
    assert rows["job-infra"][2:7] == [
        "failed (infrastructure)",
        "2",
        "0",
        "2",
        "failed (infrastructure): released in full",
    ]
    assert rows["job-ok"][2:7] == ["succeeded", "4", "4", "0", "succeeded: charged"]
    # Only the open job has a form to report its end.
    assert re.findall(r'name="job_id" value="([^"]*)"', page) == ["job-held"]
    assert "<td>3 (held)</td>" in page  # the ledger marks the hold too
    assert_safe_page(answer)


def _open_jobs(console: Console) -> str:
    """What the page's "Jobs at once" says: the jobs open, beside the client's cap."""
    [shown] = re.findall(
        r'<dd data-active-jobs="\d+">(.*?)</dd>', console.http.get(console.url).text
    )
    return html.unescape(shown)


def _set_cap(console: Console, cap: int | None) -> None:
    console.service.set_policy(
        console.client_id, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=cap
    )


def test_the_page_shows_the_jobs_open_beside_the_cap(console: Console) -> None:
    # The tests' clients have a cap of their own (tests/factories.py: UNCAPPED).
    assert _open_jobs(console) == "0 open, at most 1000000 (override)"
    _set_cap(console, None)
    reserve(console, "job-a", 3)
    reserve(console, "job-b", 1)
    assert _open_jobs(console) == "2 open, at most 5 (the plan's)"
    end(console, "job-a", JobStatus.SUCCEEDED)
    assert _open_jobs(console) == "1 open, at most 5 (the plan's)"
    console.service.change_plan(console.client_id, PlanId.ENTERPRISE)
    assert _open_jobs(console) == "1 open, no cap (the plan's)"
    _set_cap(console, 2)
    assert _open_jobs(console) == "1 open, at most 2 (override)"


def test_a_job_charged_at_intake_has_no_hold(console: Console) -> None:
    console.service.charge(console.client_id, job_id="no-job-stored")
    job = StoredJob(client_id=console.client_id, job_id="old-way", created_at=datetime.now(UTC))
    import_jobs(console, [job])
    rows = job_rows(console.http.get(console.url).text)
    assert list(rows) == ["old-way"]  # a charge without a stored job is in the ledger only
    assert rows["old-way"][3:7] == ["", "", "", "Charged at intake (no hold)"]


def test_jobs_of_an_earlier_cycle_are_listed_only_while_open(console: Console) -> None:
    start = console.service.get_client(console.client_id).billing_cycle_start

    def stored(job_id: str, before: timedelta, status: JobStatus) -> StoredJob:
        at = start - before
        receipt = Receipt(reserved=1, hold_until=at + timedelta(hours=24))
        return StoredJob(
            client_id=console.client_id,
            job_id=job_id,
            created_at=at,
            status=status,
            receipt=receipt if status.open else None,
        )

    jobs = [
        stored("open-before", timedelta(hours=10), JobStatus.QUEUED),
        stored("ended-before", timedelta(hours=9), JobStatus.SUCCEEDED),
        stored("open-long-before", timedelta(hours=30), JobStatus.RUNNING),
    ]
    import_jobs(console, jobs)
    reserve(console, "this-cycle", 1)
    page = console.http.get(console.url).text
    # Past every hold's time to live, a job is the sweeper's to expire, not listed.
    assert listed(page) == ["this-cycle", "open-before"]


def test_the_jobs_are_paged_and_htmx_gets_the_section_alone(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_client, "OUTCOMES_PAGE", 2)
    for n in range(5):
        reserve(console, f"job-{n}", 1)
        if n:
            end(console, f"job-{n}", JobStatus.SUCCEEDED)
    page = console.http.get(console.url).text
    assert listed(page) == ["job-4", "job-3"]
    older = f"{console.url}/outcomes?offset=2"
    assert f'<a href="{older}" hx-get="{older}" hx-target="#outcomes">Older</a>' in page
    assert '<span data-holding="1">' in page  # job-0, on a later page

    whole = console.http.get(older)  # without JavaScript: the section as a page
    assert "<html" in whole.text
    assert "<h1>Jobs: Acme Corp</h1>" in whole.text
    assert 'id="outcomes"' in whole.text
    assert listed(whole.text) == ["job-2", "job-1"]
    part = console.http.get(older, headers={"HX-Request": "true"})
    assert "<html" not in part.text
    assert listed(part.text) == ["job-2", "job-1"]
    last = console.http.get(f"{console.url}/outcomes?offset=4", headers={"HX-Request": "true"})
    assert listed(last.text) == ["job-0"]
    assert "Older" not in last.text
    assert 'name="job_id" value="job-0"' in last.text  # the form is on its page too
    assert console.http.get(f"{console.url}/outcomes?offset=-1").status_code == 422


def test_hostile_job_ids_and_reasons_are_escaped(console: Console) -> None:
    reserve(console, HOSTILE, 1)  # open: its id is in the report form too
    settled = Receipt(
        reserved=1,
        hold_until=datetime.now(UTC) + timedelta(hours=1),
        charged=1,
        released=0,
        reason=HOSTILE,
        settled_at=datetime.now(UTC),
    )
    imported = StoredJob(
        client_id=console.client_id,
        job_id=f"imported {HOSTILE}",
        created_at=datetime.now(UTC),  # after the reservation above
        status=JobStatus.SUCCEEDED,
        receipt=settled,
        failure_class=HOSTILE,
    )
    import_jobs(console, [imported])
    for url in (console.url, f"{console.url}/outcomes"):
        answer = console.http.get(url)
        assert HOSTILE not in answer.text
        assert f'name="job_id" value="{ESCAPED}"' in answer.text
        assert f'<td class="reason">{ESCAPED}</td>' in answer.text
        assert f"succeeded ({ESCAPED})" in answer.text
        assert_safe_page(answer, ESCAPED)
        assert listed(answer.text) == [f"imported {HOSTILE}", HOSTILE]


@pytest.mark.parametrize(
    ("meter", "shown"),
    [
        (MeterReport(state=MeterState.PENDING, customer_id="cus_1"), "Stripe report pending"),
        (MeterReport(state=MeterState.REPORTED, customer_id="cus_1"), "Stripe report reported"),
        (MeterReport(state=MeterState.NOT_BILLED), "Stripe report not billed"),
        (
            MeterReport(state=MeterState.FAILED, customer_id="cus_1", code="too_old"),
            "Stripe report failed, too_old",
        ),
        (
            MeterReport(state=MeterState.FAILED, customer_id="cus_1", code=UNCONFIRMED),
            "Stripe report failed, unconfirmed: Stripe may hold it already; check its meter "
            "events before billing it by hand",
        ),
    ],
)
def test_a_receipts_overage_shows_where_its_stripe_report_stands(
    console: Console, meter: MeterReport, shown: str
) -> None:
    now = datetime.now(UTC)
    receipt = Receipt(
        reserved=1, hold_until=now, charged=1, released=0, overage=4, settled_at=now, meter=meter
    )
    job = StoredJob(
        client_id=console.client_id,
        job_id="over",
        created_at=now,
        status=JobStatus.SUCCEEDED,
        receipt=receipt,
    )
    import_jobs(console, [job])
    page = console.http.get(console.url).text
    assert job_rows(page)["over"][6] == f"(overage 4: {shown})"
    assert f'<span data-meter="{meter.state.value}">' in page


def test_a_store_that_keeps_no_jobs_says_so(http: TestClient, env: Path) -> None:
    """A host's own store without ``JobStorage``: the ledger alone, and no report form."""
    set_service(BillingService(PrimitivesOnly(JsonFileStore(env / "clients.json"))))
    console = open_console(http, get_service())
    console.service.charge(console.client_id, job_id="charged-job")
    page = console.http.get(console.url)
    assert page.status_code == 200
    assert "This gateway's store keeps no jobs, only their charges" in page.text
    assert '<table class="outcomes">' not in page.text
    assert "<code>charged-job</code>" in page.text  # in the ledger
    assert 'name="job_id"' not in page.text
    # Its jobs holding credits are its ledger's held entries (a charge at intake holds none).
    assert _open_jobs(console) == "0 open, at most 1000000 (override)"
    reserve(console, "held-job", 2)  # a host's store that holds: its ledger marks the hold
    assert _open_jobs(console) == "1 open, at most 1000000 (override)"


# -- reporting a job's end -------------------------------------------------------------------

ENDS = {
    "infrastructure": ("failed", "infrastructure", 0, "failed (infrastructure): released in full"),
    "client_error": ("failed", "client_error", 3, "failed (client_error): charged"),
    "succeeded": ("succeeded", "", 3, "succeeded: charged"),
    "cancelled": ("cancelled", "", 0, "cancelled before it started: released in full"),
    "timed_out": ("timed_out", "", 0, "timed out: released in full"),
}


@pytest.mark.parametrize("name", ENDS)
def test_reporting_an_end_settles_the_hold_audited_as_the_console(
    console: Console, name: str
) -> None:
    status, failure, charged, reason = ENDS[name]
    reserve(console, "job-1", 3)
    assert console.service.get_client(console.client_id).credits_remaining == 197
    form = {"job_id": "job-1", "status": status, "failure_class": failure}
    answer = console.post("/outcome", form)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"{console.url}?notice=outcome"
    job = stored_job(console.service, console.client_id, "job-1")
    assert job.receipt is not None
    assert (job.status.value, job.receipt.charged, job.receipt.released) == (
        status,
        charged,
        3 - charged,
    )
    assert console.service.get_client(console.client_id).credits_remaining == 200 - charged
    [event] = console.events(AuditAction.JOB_OUTCOME)
    assert (event.actor, event.source, event.detail["job_id"]) == ("console", "testclient", "job-1")
    page = console.http.get(answer.headers["location"]).text
    assert "Job&#39;s end reported: its receipt is in Jobs." in page
    assert job_rows(page)["job-1"][6] == reason
    assert 'name="job_id"' not in page  # ended: no form any more


REFUSED = {
    "failed_without_class": ({"status": "failed"}, 422, "invalid_request"),
    "class_not_failed": (
        {"status": "succeeded", "failure_class": "infrastructure"},
        422,
        "invalid_request",
    ),
    "ended_already": (
        {"status": "failed", "failure_class": "client_error"},
        409,
        "illegal_transition",
    ),
    "unknown_job": ({"status": "succeeded", "job_id": "no-such-job"}, 404, "job_not_found"),
    "another_clients_job": ({"status": "succeeded", "job_id": "theirs"}, 404, "job_not_found"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_report_shows_the_page_with_its_message_and_changes_nothing(
    console: Console, name: str
) -> None:
    data, status, code = REFUSED[name]
    reserve(console, "job-1", 3)
    if name == "ended_already":
        end(console, "job-1", JobStatus.SUCCEEDED)
    other, _ = console.service.create_client(name="Other", email="o@acmecorp.com", plan=PlanId.PRO)
    console.service.reserve(other.client_id, job_id="theirs", price=2)
    before = console.state(), stored_job(console.service, console.client_id, "job-1")
    theirs = console.service.get_client(other.client_id)
    answer = console.post("/outcome", {"job_id": "job-1"} | data)
    assert answer.status_code == status, answer.text
    assert f'<p class="alert" role="alert" data-code="{code}">' in answer.text
    assert "Nothing was changed." in answer.text
    assert "<h1>Acme Corp</h1>" in answer.text
    assert (console.state(), stored_job(console.service, console.client_id, "job-1")) == before
    assert stored_job(console.service, other.client_id, "theirs").status is JobStatus.QUEUED
    assert console.service.get_client(other.client_id) == theirs


@pytest.mark.parametrize(
    ("data", "field_name"),
    [
        ({"status": "succeeded", "client_id": "someone"}, "client_id"),
        ({"status": "succeeded", "usage": "tokens_in"}, "usage"),
        ({"status": "exploded"}, "status"),
        ({"status": "succeeded", "job_id": "a\nb"}, "job_id"),
        ({"status": "failed", "failure_class": "Not A Class"}, "failure_class"),
    ],
    ids=["client_id", "usage", "status", "job_id_lines", "failure_class"],
)
def test_an_invalid_report_form_is_a_422_naming_the_field(
    console: Console, data: dict[str, str], field_name: str
) -> None:
    reserve(console, "job-1", 3)
    before = console.state()
    answer = console.post("/outcome", {"job_id": "job-1"} | data)
    assert answer.status_code == 422, answer.text
    assert f"<li>{field_name}:" in answer.text
    assert console.state() == before


def test_a_report_without_the_sessions_token_is_refused(console: Console) -> None:
    reserve(console, "job-1", 3)
    answer = console.post("/outcome", {"job_id": "job-1", "status": "succeeded"}, csrf=False)
    assert answer.status_code == 403
    assert stored_job(console.service, console.client_id, "job-1").status is JobStatus.QUEUED


def test_a_form_action_keeps_its_405_beside_the_paged_sections(console: Console) -> None:
    """Each paged section is a route of its own: a GET to a form's POST-only action is still a
    405, not a section that does not exist."""
    for action in ("credits", "outcome", "plan"):
        assert console.http.get(f"{console.url}/{action}").status_code == 405, action
    for section in ("jobs", "outcomes", "audit"):
        assert console.http.get(f"{console.url}/{section}").status_code == 200, section
