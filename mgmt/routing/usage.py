"""Usage per department over time, read from the gateway's audit events (requests, tokens, latency).

No money and no quotas: these are counts for capacity planning. Charts are laid out here as plain
numbers (bar positions) and drawn as SVG by the template, so nothing but numbers reaches the markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

__all__ = ["Bar", "Chart", "usage_charts"]

QUERY = """
SELECT date_trunc('hour', ts) AS hour, department, count(*),
       coalesce(sum((data->>'prompt_tokens')::bigint), 0)
         + coalesce(sum((data->>'completion_tokens')::bigint), 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (data->>'latency_ms')::float)
FROM audit_event
WHERE action = 'gateway.request' AND ts >= %s AND department <> ''
GROUP BY 1, 2 ORDER BY 1, 2
"""

WIDTH, HEIGHT = 720, 160


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass
class Chart:
    department: str
    metric: str
    unit: str
    maximum: float
    total: float
    bars: list[Bar] = field(default_factory=list)


def usage_charts(hours: int = 24, now: datetime | None = None) -> list[Chart]:
    now = now or timezone.now()
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute(QUERY, [start])
        rows = cursor.fetchall()
    series: dict[str, dict[str, dict[datetime, float]]] = {}
    for hour, department, requests, tokens, latency in rows:
        per = series.setdefault(department, {"requests": {}, "tokens": {}, "latency": {}})
        per["requests"][hour] = float(requests)
        per["tokens"][hour] = float(tokens)
        per["latency"][hour] = float(latency or 0.0)
    slots = [start + timedelta(hours=i) for i in range(hours)]
    units = {"requests": "requests/hour", "tokens": "tokens/hour", "latency": "median latency, ms"}
    charts = []
    for department in sorted(series):
        for metric, unit in units.items():
            values = [series[department][metric].get(slot, 0.0) for slot in slots]
            charts.append(_chart(department, metric, unit, slots, values))
    return charts


def _chart(department: str, metric: str, unit: str, slots: list[datetime], values: list[float]) -> Chart:
    maximum = max(values) or 1.0
    step = WIDTH / len(values)
    chart = Chart(department, metric, unit, maximum, sum(values) if metric != "latency" else maximum)
    for i, (slot, value) in enumerate(zip(slots, values, strict=True)):
        height = (value / maximum) * (HEIGHT - 20)
        chart.bars.append(
            Bar(
                x=round(i * step + 1, 1),
                y=round(HEIGHT - height, 1),
                width=round(step - 2, 1),
                height=round(height, 1),
                label=f"{slot:%H:00}: {value:g}",
            )
        )
    return chart
