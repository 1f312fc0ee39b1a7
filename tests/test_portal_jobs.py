"""The client portal's dashboard and charging by outcome, over HTTP
(openclaw_billing/web/portal.py): the credits held by jobs not finished yet, and each recent
job's status and receipt, holds marked, hostile text escaped; the jobs open against the
client's cap of jobs at once."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from openclaw_billing.jobs import JobStatus, Receipt, StoredJob
from openclaw_billing.ledger import open_holds
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store.capabilities import JobStorage
from tests.console_pages import ESCAPED, HOSTILE
from tests.factories import create_client
from tests.test_portal import PORTAL, numbers, portal_sign_in


def job_rows(page: str) -> dict[str, list[str]]:
    """The recent jobs by id: the row's class, then each cell's text."""
    [table] = re.findall(r'<table class="jobs">.*?</table>', page, re.S)
    rows = {}
    for attrs, row in re.findall(r"<tr( [^>]*)?>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        text = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", c)).strip() for c in cells]
        rows[text[1]] = [attrs.strip(), *text]
    return rows


def test_the_dashboard_shows_credits_held_and_each_jobs_status_and_receipt(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    cid = client["client_id"]
    service.reserve(cid, job_id="job-held", price=3)
    service.reserve(cid, job_id="job-infra", price=2)
    service.report_job("job-infra", Report(JobStatus.FAILED, "infrastructure"), client_id=cid)
    service.reserve(cid, job_id="job-ok", price=4)
    service.report_job("job-ok", Report(JobStatus.SUCCEEDED), client_id=cid)
    service.charge(cid, job_id="no-job-stored")
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["credits-left"] == str(200 - 3 - 4 - 1)
    assert '<span data-held="3">3</span> of the credits used are held' in page
    rows = job_rows(page)
    assert list(rows) == ["no-job-stored", "job-ok", "job-infra", "job-held"]
    assert rows["job-held"][0] == 'class="holding"'
    assert rows["job-held"][3:6] == ["3", "0.00", "queued holding"]
    assert rows["job-held"][6].startswith("Held until ")
    assert rows["job-infra"][0] == ""
    assert rows["job-infra"][3:] == [
        "0",
        "0.00",
        "failed",
        "failed (infrastructure): released in full",
    ]
    assert rows["job-ok"][3:] == ["4", "0.00", "succeeded", "succeeded: charged"]
    assert rows["no-job-stored"][3:] == ["1", "0.00", "charged", ""]


def test_a_hostile_receipt_is_escaped(http: TestClient, service: BillingService) -> None:
    client = create_client(http, "pro")
    cid = client["client_id"]
    service.charge(cid, job_id=HOSTILE)
    now = datetime.now(UTC)
    receipt = Receipt(
        reserved=1, hold_until=now, charged=1, released=0, reason=HOSTILE, settled_at=now
    )
    job = StoredJob(
        client_id=cid, job_id=HOSTILE, created_at=now, status=JobStatus.SUCCEEDED, receipt=receipt
    )
    store = service.store
    assert isinstance(store, JobStorage)
    assert store.import_jobs([job]) == 1
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert HOSTILE not in page
    assert f"<code>{ESCAPED}</code>" in page
    assert f'<td class="reason">{ESCAPED}</td>' in page
    assert re.search(r"\son[a-z]+=", page.replace(ESCAPED, "")) is None
    assert 'style="' not in page


def jobs_at_once(http: TestClient) -> tuple[str, str, str]:
    """What the dashboard's "Jobs at once" line says: its text, and its two figures."""
    page = http.get(f"{PORTAL}/").text
    [line] = re.findall(r"<p>Jobs at once: (.*?)</p>", page, re.S)
    [(shown, limit)] = re.findall(
        r'data-active-jobs="([^"]*)".*data-active-jobs-limit="([^"]*)"', line
    )
    return re.sub(r"<[^>]+>", "", line), shown, limit


def test_the_dashboard_shows_the_jobs_open_against_the_cap(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro", max_active_jobs=None)  # the plan's cap: 5
    cid = client["client_id"]
    portal_sign_in(http, client["api_key"])
    text, shown, limit = jobs_at_once(http)
    assert (shown, limit) == ("0", "5")
    assert text == (
        "0 of 5 (your jobs queued or running; at 5, a new job is refused until one ends)."
    )
    service.reserve(cid, job_id="job-a", price=2)
    service.reserve(cid, job_id="job-b", price=1)
    service.charge(cid, job_id="charged")  # charged at intake: holds nothing
    assert jobs_at_once(http)[1:] == ("2", "5")
    service.report_job("job-a", Report(JobStatus.SUCCEEDED), client_id=cid)
    assert jobs_at_once(http)[1:] == ("1", "5")
    service.set_policy(cid, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=2)
    assert jobs_at_once(http)[1:] == ("1", "2")
    # Each move between a limited and an unlimited plan starts a cycle: after the second the
    # ledger no longer keeps the hold of job-b, which the store still counts (as its cap does).
    service.set_policy(cid, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=None)
    for plan in (PlanId.ENTERPRISE, PlanId.STARTER, PlanId.ENTERPRISE):
        service.change_plan(cid, plan)
    assert open_holds(service.get_client(cid)) == 0
    assert jobs_at_once(http) == ("1 (no limit).", "1", "none")
