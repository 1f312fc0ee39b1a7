"""The console's home, ``/billing/console/``: the store at a glance (``service.overview()``,
the same figures as ``GET /api/admin/overview``): clients by plan and status, this cycle's jobs
and credits, clients at their limit and past due (each a link to the clients list filtered so),
monthly recurring revenue by plan, and jobs per day over the last 30 days as a bar chart.

The chart is an inline SVG whose bars are ``<rect>`` elements sized by attributes (the pages'
policy allows no inline style), each with its count as a title, and the same numbers in a
table under it for screen readers and for copying.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..reports import Overview
from .auth import CONSOLE_PATH, ConsoleUser
from .pages import PageRoute, render

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)

#: The chart's drawing area, in SVG units (the image scales to the page's width).
CHART_WIDTH = 600
CHART_HEIGHT = 160
#: Room under the bars for the date labels.
LABEL_ROOM = 18


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    jobs: int
    #: Whether the bar's date is written under it (every 5th day, and the last).
    labelled: bool


def chart_bars(overview: Overview) -> list[Bar]:
    """The bars of the jobs-per-day chart: heights relative to the busiest day (a day with
    jobs is at least 1 unit tall, so it never looks like none)."""
    days = overview.jobs_by_day
    peak = max((d.jobs for d in days), default=0)
    slot = CHART_WIDTH / max(1, len(days))
    bars = []
    for n, day in enumerate(days):
        height = 0.0 if day.jobs == 0 else max(1.0, (CHART_HEIGHT - LABEL_ROOM) * day.jobs / peak)
        bars.append(
            Bar(
                x=round(n * slot + 1, 2),
                y=round(CHART_HEIGHT - LABEL_ROOM - height, 2),
                width=round(slot - 2, 2),
                height=round(height, 2),
                label=day.day.strftime("%b %d"),
                jobs=day.jobs,
                labelled=n % 5 == 0 or n == len(days) - 1,
            )
        )
    return bars


@router.get("/")
def overview_page(request: Request, user: ConsoleUser) -> HTMLResponse:
    overview = user.service.overview()
    return render(
        request,
        "console/overview.html",
        {
            "side": "console",
            "section": "overview",
            "csrf": user.csrf,
            "overview": overview,
            "bars": chart_bars(overview),
            "chart": {
                "width": CHART_WIDTH,
                "height": CHART_HEIGHT,
                "base": CHART_HEIGHT - LABEL_ROOM,
            },
        },
    )
