"""The pages of the Bulk changes UI as Jinja2 templates (kept in the module: no package data).

Autoescaping is on for every template and undefined names raise: every value a page shows (customer
names, carrier reasons, audit texts, user names...) is HTML-escaped; nothing in the database can add
markup. The one value marked ``safe`` is the page's own style sheet (``assets.CSS``, a constant).
Values in links go through the ``q`` filter (percent-encoded).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jinja2 import DictLoader, Environment, StrictUndefined

_MACROS = """
{% macro badge(status) -%}<span class="badge {{ status }}">{{ status }}</span>{%- endmacro %}
{% macro bar(p, big=False) -%}
<div class="{{ 'big' if big else '' }}">
<div class="progress" data-total="{{ p.total }}" data-done="{{ p.done }}" data-processed="{{ p.processed }}"
     title="{% for s, css, n, pct in p.segments %}{{ s }} {{ n }}{{ ', ' if not loop.last }}{% endfor %}">
{%- for s, css, n, pct in p.segments %}<span class="{{ css }}" style="width: {{ '%.3f' % pct }}%"></span>{% endfor -%}
</div>
<div class="progress-label">{{ p.done|num }} / {{ p.total|num }} done &middot; {{ p.processed|num }} activated
{%- if p.failed %} &middot; {{ p.failed|num }} failed{% endif %}{% if p.cancelled %} &middot; {{ p.cancelled|num }} cancelled{% endif %}</div>
</div>
{%- endmacro %}
{% macro run_link(run_id) -%}
{% if run_id %}<a class="mono" data-airflow-route href="{{ airflow_root }}dags/{{ dag_id|q }}/runs/{{ run_id|q }}">{{ run_id }}</a>
{%- else %}<span class="none">not triggered</span>{% endif %}
{%- endmacro %}
"""

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><link rel="icon" href="{{ root }}/static/icon.svg"><style>{{ css|safe }}</style></head>
<body>
<header class="top"><a href="{{ root }}/bulk-changes"><strong>Bulk changes</strong></a>
{% block crumbs %}{% endblock %}<span class="who">signed in as {{ user }}</span></header>
<main>{% block main %}{% endblock %}</main>
<script src="{{ root }}/static/app.js"></script>
</body></html>
"""

_LIST = """{% extends "base.html" %}{% import "macros.html" as m with context %}
{% block main %}
<h1>Bulk changes</h1>
<form class="toolbar" method="get" action="{{ root }}/bulk-changes">
<label>Status <select name="status" aria-label="Status">
<option value="">any</option>
{% for s in statuses %}<option value="{{ s }}"{{ ' selected' if s == status }}>{{ s }}</option>{% endfor %}
</select></label><button type="submit">Filter</button>
</form>
{% include "list_live.html" %}
<div class="pager">{% if before %}<a href="{{ root }}/bulk-changes?status={{ (status or '')|q }}">Newest</a>{% endif %}
{% if next_before %}<a href="{{ root }}/bulk-changes?status={{ (status or '')|q }}&amp;before={{ next_before }}">Older</a>{% endif %}</div>
{% endblock %}
"""

_LIST_LIVE = """{% import "macros.html" as m with context %}<section id="bulk-changes" data-poll-url="{{ poll_url }}" data-poll-ms="{{ poll_ms }}">
{% if rows %}
<table class="bulk-changes"><thead><tr><th class="num">#</th><th>Status</th><th>Customer</th><th class="num">Devices</th>
<th>Progress</th><th>Created</th><th>Started</th><th>Finished</th><th>Run</th></tr></thead><tbody>
{% for bc in rows %}<tr data-bulk-change="{{ bc.id }}">
<td class="num"><a href="{{ root }}/bulk-changes/{{ bc.id }}">{{ bc.id }}</a></td>
<td>{{ m.badge(bc.status) }}{% if bc.cancel_requested_at and bc.status != 'CANCELLED' %} <span class="badge CANCELLED">cancelling</span>{% endif %}</td>
<td>{{ bc.customer_name or '' }}</td><td class="num">{{ bc.device_count|num }}</td>
<td>{{ m.bar(bc.progress) }}</td>
<td class="when">{{ bc.created_at|when }}</td><td class="when">{{ bc.processing_started_at|when }}</td>
<td class="when">{{ bc.processed_at|when }}</td><td>{{ m.run_link(bc.dag_run_id) }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="none">No bulk change{{ ' with status ' ~ status if status }}.</p>{% endif %}
</section>
"""

_DETAIL = """{% extends "base.html" %}{% import "macros.html" as m with context %}
{% block crumbs %}<span>&rsaquo; bulk change {{ bc.id }}</span>{% endblock %}
{% block main %}
{% include "detail_live.html" %}
<h2 id="devices">Devices</h2>
<form class="toolbar" method="get" action="{{ base }}#devices">
<input type="search" name="q" value="{{ q or '' }}" placeholder="ICCID, IMEI or MDN (first digits)" aria-label="Search devices"
 inputmode="numeric" pattern="[0-9]{1,20}" maxlength="20"><button type="submit">Search</button>
{% if q %}<a href="{{ base }}#devices">Clear</a>{% endif %}</form>
{% if devices %}<table class="devices"><thead><tr><th class="num">Line</th><th>ICCID</th><th>IMEI</th><th>MDN</th><th>Status</th>
<th>Step</th><th>IP</th><th>Details</th><th>Updated</th></tr></thead><tbody>
{% for d in devices %}<tr data-iccid="{{ d.iccid }}"><td class="num">{{ d.line_number }}</td>
<td class="mono"><a href="{{ base }}/devices/{{ d.id }}">{{ d.iccid }}</a></td><td class="mono">{{ d.imei }}</td>
<td class="mono">{{ d.subscriber_number or '' }}</td><td>{{ m.badge(d.status) }}</td><td>{{ d.step }}</td>
<td class="mono">{{ d.assigned_ip or '' }}</td><td class="reason">{{ d.status_details or '' }}</td><td class="when">{{ d.updated_at|when }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="none">No device{{ ' matches ' ~ q if q }}.</p>{% endif %}
<div class="pager">{% if after %}<a href="{{ base }}?q={{ (q or '')|q }}#devices">First page</a>{% endif %}
{% if next_after %}<a href="{{ base }}?q={{ (q or '')|q }}&amp;after={{ next_after }}#devices">Next {{ page_size }}</a>{% endif %}</div>
{% endblock %}
"""

_DETAIL_LIVE = """{% import "macros.html" as m with context %}<section id="summary" data-poll-url="{{ poll_url }}" data-poll-ms="{{ poll_ms }}" data-status="{{ bc.status }}">
<h1>Bulk change {{ bc.id }} {{ m.badge(bc.status) }}{% if bc.customer_name %} <span>{{ bc.customer_name }}</span>{% endif %}</h1>
<dl class="facts">
<dt>Devices</dt><dd>{{ bc.device_count|num }}</dd><dt>Run</dt><dd>{{ m.run_link(bc.dag_run_id) }}</dd>
<dt>Created</dt><dd>{{ bc.created_at|when }} by {{ bc.created_by }}</dd><dt>Service provider</dt><dd>{{ bc.service_provider_id }}</dd>
<dt>Started</dt><dd>{{ bc.processing_started_at|when }}</dd><dt>Finished</dt><dd>{{ bc.processed_at|when }}</dd>
{% if bc.status_details %}<dt>Details</dt><dd>{{ bc.status_details }}</dd>{% endif %}
{% if bc.cancel_requested_at %}<dt>Cancelled</dt><dd>by {{ bc.cancelled_by }} at {{ bc.cancel_requested_at|when }}: {{ bc.cancel_reason }}</dd>{% endif %}
</dl>
<div class="toolbar"><span>Report</span>
<a class="button" href="{{ base }}/report.json" download>JSON</a><a class="button" href="{{ base }}/report.csv" download>CSV</a>
<a class="button" href="{{ base }}/report.html" download>HTML</a>
{% for a in actions %}<a class="button {{ a.css }}" href="{{ base }}/confirm/{{ a.action }}">{{ a.label }}</a>{% endfor %}
</div>
{{ m.bar(progress, big=True) }}
<div class="cards">{% for s, css, n, pct in progress.segments %}<div class="card"><div class="n">{{ n|num }}</div><div class="l">{{ s }}</div></div>{% endfor %}</div>
<div class="row"><section class="wide"><h2>Steps</h2>
{% if steps %}<table class="steps"><thead><tr><th>Step</th><th>Started</th><th>Finished</th><th class="num">Time</th></tr></thead><tbody>
{% for s in steps %}<tr><td>{{ s.step }}</td><td class="when">{{ s.started_at|when }}</td><td class="when">{{ s.finished_at|when if s.finished_at else 'running' }}</td>
<td class="num">{{ s.seconds|dur }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="none">No step has started.</p>{% endif %}</section>
<section><h2>Failures by class</h2>
{% if failures_by_class %}<table class="failure-classes"><thead><tr><th>Class</th><th class="num">Devices</th></tr></thead><tbody>
{% for c, n in failures_by_class %}<tr><td>{{ c }}</td><td class="num">{{ n|num }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="none">No failed device.</p>{% endif %}</section></div>
{% if failures_by_reason %}<h2>Failures by reason</h2>
<table class="failure-reasons"><thead><tr><th>Class</th><th>Key</th><th>Status</th><th>Reason</th><th class="num">Devices</th><th>What to do</th></tr></thead><tbody>
{% for f in failures_by_reason %}<tr><td>{{ f['class'] }}</td><td class="mono">{{ f.key }}</td><td>{{ m.badge(f.status) }}</td>
<td class="reason">{{ f.reason }}</td><td class="num">{{ f.devices|num }}</td><td class="reason">{{ f.hint }}</td></tr>{% endfor %}
</tbody></table>
{% if failures_by_reason_omitted and failures_by_reason_omitted.reasons %}<p class="none omitted-reasons">and {{ failures_by_reason_omitted.reasons|num }} other reason(s) of {{ failures_by_reason_omitted.devices|num }} device(s): search the devices below, or download the CSV.</p>{% endif %}{% endif %}
</section>
"""

_DEVICE = """{% extends "base.html" %}{% import "macros.html" as m with context %}
{% block crumbs %}<a href="{{ base }}">&rsaquo; bulk change {{ d.bulk_change_id }}</a><span>&rsaquo; {{ d.iccid }}</span>{% endblock %}
{% block main %}
<h1>Device {{ d.iccid }} {{ m.badge(d.status) }}</h1>
<dl class="facts">
<dt>Line</dt><dd>{{ d.line_number }}</dd><dt>Step</dt><dd>{{ d.step }}</dd>
<dt>ICCID</dt><dd class="mono">{{ d.iccid }}</dd><dt>IMEI</dt><dd class="mono">{{ d.imei }}</dd>
<dt>MDN</dt><dd class="mono">{{ d.subscriber_number or '' }}</dd><dt>Batch</dt><dd>{{ d.batch_no if d.batch_no is not none else '' }}</dd>
<dt>Activation request</dt><dd class="mono">{{ d.activation_request_id or '' }}</dd><dt>Activated</dt><dd>{{ d.activated_at|when }}</dd>
<dt>Static IP</dt><dd>{{ 'yes' if d.needs_static_ip else 'no' }}{% if d.reserved_ip %}, reserved {{ d.reserved_ip }}{% endif %}{% if d.assigned_ip %}, assigned {{ d.assigned_ip }}{% endif %}</dd>
<dt>IP batch</dt><dd class="mono">{{ d.ip_batch_id or '' }}</dd>
<dt>Details</dt><dd>{{ d.status_details or '' }}</dd><dt>Finished</dt><dd>{{ d.processed_at|when }}</dd>
</dl>
<h2>Audit trail</h2>
{% if trail %}<table class="trail"><thead><tr><th>When</th><th>Step</th><th>What</th><th>Status</th><th>Class</th><th>Error</th><th>By</th><th>Request / answer</th></tr></thead><tbody>
{% for r in trail %}<tr><td class="when">{{ r.processed_at|when(seconds=3) }}</td><td>{{ r.step }}</td><td>{{ r.description }}</td>
<td>{{ m.badge(r.response_status) }}</td><td>{{ r.error_class or '' }}</td><td class="reason">{{ r.error_text or '' }}</td><td class="mono">{{ r.processed_by }}</td>
<td>{% if r.request_text or r.response_text %}<details><summary>show{% if r.carrier_write_id %} (carrier write {{ r.carrier_write_id }}){% endif %}</summary>
{% if r.request_text %}<pre>{{ r.request_text }}</pre>{% endif %}{% if r.response_text %}<pre>{{ r.response_text }}</pre>{% endif %}</details>{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="none">Nothing recorded for this device yet.</p>{% endif %}
{% endblock %}
"""

_CONFIRM = """{% extends "base.html" %}
{% block crumbs %}<a href="{{ base }}">&rsaquo; bulk change {{ bc.id }}</a>{% endblock %}
{% block main %}
<h1>{{ heading }}</h1>
<form class="confirm" method="post" action="{{ base }}/{{ action }}">
<input type="hidden" name="confirm" value="{{ token }}">
{% for line in explain %}<p>{{ line }}</p>{% endfor %}
{% if action == 'cancel' %}<label>Reason (recorded, and shown in the report)
<input type="text" name="reason" required maxlength="500" autocomplete="off"></label>{% endif %}
{% if action == 'retry' %}<label><input type="radio" name="classes" value="retryable" checked> the retryable class (the CLI's default)</label>
<label><input type="radio" name="classes" value="all"> every failed device, whatever its class (<code>--all</code>)</label>{% endif %}
<div class="toolbar"><button type="submit" class="{{ button_css }}">{{ button }}</button><a href="{{ base }}">Back</a></div>
</form>
{% endblock %}
"""

_MESSAGE = """{% extends "base.html" %}
{% block main %}
<h1>{{ heading }}</h1>
<div class="notice {{ kind }}">{{ message }}</div>
{% if back %}<p><a href="{{ back }}">{{ back_label }}</a></p>{% endif %}
{% endblock %}
"""

TEMPLATES = {
    "macros.html": _MACROS,
    "base.html": _BASE,
    "list.html": _LIST,
    "list_live.html": _LIST_LIVE,
    "detail.html": _DETAIL,
    "detail_live.html": _DETAIL_LIVE,
    "device.html": _DEVICE,
    "confirm.html": _CONFIRM,
    "message.html": _MESSAGE,
}


def when(value: datetime | None, seconds: int = 0) -> str:
    """A time in UTC, to the second (or to ``seconds`` decimals); a dash when there is none."""
    if value is None:
        return "\u2013"
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if seconds:
        text += f".{value.microsecond:06d}"[: seconds + 1]
    return text + " UTC"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def number(value: Any) -> str:
    return f"{int(value or 0):,}"


def _environment() -> Environment:
    env = Environment(
        loader=DictLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, dur=duration, num=number, q=lambda v: quote(str(v), safe=""))
    return env


ENV = _environment()


def render(name: str, **values: Any) -> str:
    return ENV.get_template(name).render(**values)
