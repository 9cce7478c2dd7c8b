"""The live stream-health dashboard: ``carebus dashboard``.

A :class:`~carebus.dashboard.collector.Collector` tails the raw, dead-letter and
alert topics (headers and alert rule ids only) and polls offsets and
consumer-group lag; :func:`~carebus.dashboard.server.build_app` serves a plain
HTML+JS page (``static/``) that polls ``/api/status`` every couple of seconds,
plus ``/metrics``, ``/healthz`` and ``/readyz``. No patient data is ever read
into the collector's counts, so none can reach the page.
"""

from __future__ import annotations

from carebus.dashboard.collector import Collector
from carebus.dashboard.server import build_app

__all__ = ["Collector", "build_app"]
