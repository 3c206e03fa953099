"""What the dashboard's charts draw, read back from the canvas in headless Chromium (Debian's,
through Playwright), on sparse traffic: two isolated busy hours in a quiet day.

Counts per bucket are bars: each busy hour is drawn where it is, in the series' colour, and the
empty hours between are not drawn at all (a line chart drew a baseline and spikes). The flag rate of
an isolated hour is a visible point (a line between gaps drew nothing). The figures tables stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from test_ui_support import (
    ADMIN,
    UIServer,
    add_accounts,
    audit_record,
    browser_page,
    chromium,
    chromium_path,
    make_settings,
    open_ui_store,
    seed,
    shoot,
    sign_in_page,
    ui_server,
    ui_settings,
)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

#: Hours ago of the two busy hours, and their requests (one flagged request in the first).
BUSY = {5: 7, 15: 3}


@pytest.fixture(scope="module")
def seeded_at() -> datetime:
    """The half hour the busy hours count back from, fixed once: the test finds their buckets from
    it, not from its own clock, so an hour that turns between seeding and drawing moves nothing."""
    return datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def bucket_of(seeded_at: datetime, ago: int) -> int:
    """The start (epoch seconds) of the hourly bucket that holds the records of ``ago`` hours ago."""
    return int((seeded_at - timedelta(hours=ago)).replace(minute=0).timestamp())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded_at: datetime) -> Iterator[UIServer]:
    chromium_path()  # skip (or fail under CI) before building anything
    tmp = tmp_path_factory.mktemp("ui-drawing")
    settings = make_settings(tmp)
    store = open_ui_store(settings)
    add_accounts(store)
    hour = seeded_at
    records = []
    for ago, count in BUSY.items():
        at = hour - timedelta(hours=ago)
        records += [audit_record(at=at) for _ in range(count - (1 if ago == 5 else 0))]
    records.append(
        audit_record(
            at=hour - timedelta(hours=5), outcome="refused_input", risk="high", categories=["violence"]
        )
    )
    seed(store, records)
    with ui_server(settings, ui_settings(tmp), store) as running:
        yield running
    store.close()


@pytest.fixture
def page(server: UIServer) -> Iterator[Any]:
    with chromium() as browser, browser_page(browser) as opened:
        yield opened


#: For each bucket of a chart: how many pixels of the plot area's column at the bucket's x have the
#: colour of the chart's series ``index`` (1-based, as uPlot counts them), within a tolerance.
_COLUMN_HITS = """([name, index]) => {
    const u = window.seawallCharts[name];
    const colour = u.series[index].stroke();
    const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
    const ctx = u.ctx;
    const top = Math.round(u.bbox.top), height = Math.round(u.bbox.height);
    return u.data[0].map((x) => {
        const px = Math.round(u.valToPos(x, "x", true));
        const column = ctx.getImageData(px, top, 1, height).data;
        let hits = 0;
        for (let i = 0; i < column.length; i += 4) {
            if (column[i + 3] > 200 && want.every((c, k) => Math.abs(column[i + k] - c) < 40)) hits++;
        }
        return hits;
    });
}"""


def _hits(page: Any, chart: str, index: int = 1) -> list[int]:
    return [int(n) for n in page.evaluate(_COLUMN_HITS, [chart, index])]


def test_isolated_busy_hours_are_drawn_where_they_are_and_nothing_between(
    page: Any, server: UIServer, seeded_at: datetime, tmp_path: Path
) -> None:
    sign_in_page(page, server.ui_root, ADMIN)
    for chart in ("requests", "risk", "flag_rate"):
        sync_api.expect(page.locator(f'[data-chart="{chart}"]')).to_have_attribute("data-rendered", "true")
    x = page.evaluate("() => window.seawallCharts.requests.data[0]")
    busy = {x.index(bucket_of(seeded_at, ago)): count for ago, count in BUSY.items()}
    assert page.locator('[data-chart="requests"]').get_attribute("data-kind") == "stacked-bars"

    requests = _hits(page, "requests")
    for i in busy:
        assert requests[i] > 10, (i, requests)  # a bar, in the series' colour
    seven, three = (x.index(bucket_of(seeded_at, ago)) for ago in (5, 15))
    assert requests[seven] > requests[three]  # 7 requests stand taller than 3
    quiet = [n for i, n in enumerate(requests) if all(abs(i - b) > 1 for b in busy)]
    assert quiet and max(quiet) == 0, requests  # no baseline, no spike: the empty hours are empty

    flag_rate = _hits(page, "flag_rate")
    flagged = x.index(bucket_of(seeded_at, 5))
    assert flag_rate[flagged] > 0, flag_rate  # the isolated hour's flag rate is a visible point
    # Hours without requests have no rate at all (nothing drawn); the other busy hour's is 0 %.
    assert all(n == 0 for i, n in enumerate(flag_rate) if all(abs(i - b) > 1 for b in busy)), flag_rate

    table = page.locator('[aria-label="Requests figures"] tbody tr')
    assert table.count() == len(BUSY)  # the figures table keeps the numbers for screen readers
    shoot(page, tmp_path, "dashboard-sparse")
    assert page.errors == []
