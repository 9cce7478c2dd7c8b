"""Which listening sockets may start: no unprotected surface off the loopback interface.

Every socket carebus listens on (docs/operations.md, "Listening sockets") is one of
these components, each with its bind address, protection settings and its own
``allow_insecure`` escape hatch:

============== ========================= =============================================
component      bind address              needs, when the address is not loopback
============== ========================= =============================================
``mllp``       ``mllp.host``             ``mllp.tls_certfile``, and client certificates
                                         (``mllp.tls_client_cafile``) or a sender
                                         allow-list (``mllp.allowed_senders_file``)
``http``       ``http.host``             ``http.tls_certfile``, and client certificates
                                         (``http.tls_client_cafile``) or the allow-list
``metrics``    ``metrics.host``          ``metrics.tls_certfile`` (listener and worker
                                         ``/metrics``, ``/healthz``, ``/readyz``)
``dashboard``  ``metrics.host``/--host   ``metrics.tls_certfile``
``worker.web`` ``worker.web_host``       ``worker.web_tls_certfile``
============== ========================= =============================================

:func:`assess` is the pure rule; :func:`enforce` is what each command calls at start:
a refused surface is a one-line :class:`~carebus.errors.ConfigError`; one allowed by
``allow_insecure = true`` is logged as a warning, and :func:`readiness_check` puts
it in ``/readyz`` (still ready: the operator chose it, the probe says so).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from carebus.errors import ConfigError
from carebus.health import Check, CheckResult
from carebus.log import get_logger
from carebus.settings import Settings

log = get_logger(__name__)

COMPONENTS = ("mllp", "http", "metrics", "dashboard", "worker.web")

#: Names that always mean the loopback interface.
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class Surface:
    """One component's bind address and what it lacks to be reachable off the machine."""

    component: str
    host: str
    #: What is missing; empty when bound to loopback or fully protected.
    problems: tuple[str, ...]
    #: The ``allow_insecure`` setting of this component, and its value.
    allow_setting: str
    allowed: bool

    @property
    def insecure(self) -> bool:
        """True when this surface is reachable off the machine without its protection."""
        return bool(self.problems)

    @property
    def refused(self) -> bool:
        """True when the component must not start."""
        return self.insecure and not self.allowed

    def describe(self) -> str:
        """One line without patient data: where, and what is missing."""
        return f"{self.component} on {self.host or '*'} has {' and '.join(self.problems)}"


def is_loopback(host: str) -> bool:
    """True for an address or name of the loopback interface (empty: all interfaces)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0"-style wildcards are addresses; other names may be anything


def assess(settings: Settings, component: str, *, host: str | None = None) -> Surface:
    """The exposure of ``component`` under ``settings`` (``host`` overrides its bind address)."""
    m, h, w, mllp = settings.metrics, settings.http, settings.worker, settings.mllp
    problems: list[str] = []
    if component == "mllp":
        bind, allow_setting, allowed = mllp.host, "mllp.allow_insecure", mllp.allow_insecure
        if mllp.tls_certfile is None:
            problems.append("no TLS (mllp.tls_certfile)")
        if mllp.tls_client_cafile is None and mllp.allowed_senders_file is None:
            problems.append(
                "no client certificates (mllp.tls_client_cafile) "
                "or sender allow-list (mllp.allowed_senders_file)"
            )
    elif component == "http":
        bind, allow_setting, allowed = h.host, "http.allow_insecure", h.allow_insecure
        if h.tls_certfile is None:
            problems.append("no TLS (http.tls_certfile)")
        if h.tls_client_cafile is None and mllp.allowed_senders_file is None:
            problems.append(
                "no client certificates (http.tls_client_cafile) "
                "or sender allow-list (mllp.allowed_senders_file)"
            )
    elif component in ("metrics", "dashboard"):
        bind, allow_setting, allowed = m.host, "metrics.allow_insecure", m.allow_insecure
        if m.tls_certfile is None:
            problems.append("no TLS (metrics.tls_certfile)")
    elif component == "worker.web":
        bind, allow_setting, allowed = w.web_host, "worker.allow_insecure", w.allow_insecure
        if w.web_tls_certfile is None:
            problems.append("no TLS (worker.web_tls_certfile)")
    else:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    bind = bind if host is None else host
    if is_loopback(bind):
        problems = []
    return Surface(component, bind, tuple(problems), allow_setting, allowed)


def enforce(surfaces: Iterable[Surface]) -> list[Surface]:
    """Refuse to start (``ConfigError``) on a refused surface; warn about allowed ones.

    Returns the surfaces, for :func:`readiness_check`.
    """
    surfaces = list(surfaces)
    for surface in surfaces:
        if surface.refused:
            raise ConfigError(
                f"refusing to start: {surface.describe()}; configure them, bind to "
                f"127.0.0.1, or set {surface.allow_setting} = true"
            )
    for surface in surfaces:
        if surface.insecure:
            log.warning(
                "exposure.insecure",
                kind=surface.component,
                host=surface.host,
                detail=f"{'; '.join(surface.problems)}; allowed by {surface.allow_setting}",
            )
    return surfaces


def check_components(
    settings: Settings, components: Sequence[str], *, hosts: dict[str, str] | None = None
) -> list[Surface]:
    """:func:`assess` each of ``components`` and :func:`enforce` the result (at start)."""
    hosts = hosts or {}
    return enforce(assess(settings, c, host=hosts.get(c)) for c in components)


def readiness_check(surfaces: Sequence[Surface]) -> Check:
    """A ``/readyz`` check that names every surface started insecure by ``allow_insecure``."""
    insecure = [s for s in surfaces if s.insecure]
    if insecure:
        result = CheckResult(
            True, "insecure (allow_insecure): " + "; ".join(s.describe() for s in insecure)
        )
    else:
        names = ", ".join(s.component for s in surfaces)
        result = CheckResult(True, f"loopback or protected: {names}")

    async def check() -> CheckResult:
        return result

    return check
