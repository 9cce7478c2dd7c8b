"""Every topic carebus uses, declared in one place."""

from __future__ import annotations

from dataclasses import dataclass

from carebus.settings import TopicSettings


@dataclass(frozen=True)
class TopicNames:
    """The names of carebus's topics, derived from the configured prefix."""

    prefix: str = "carebus"

    @classmethod
    def from_settings(cls, settings: TopicSettings) -> TopicNames:
        return cls(prefix=settings.prefix)

    @property
    def raw(self) -> str:
        """The raw HL7 archive: every message received, exactly as received."""
        return f"{self.prefix}.hl7.raw"

    @property
    def events(self) -> str:
        """Canonical care events, Avro, keyed by patient."""
        return f"{self.prefix}.events"

    @property
    def deadletter(self) -> str:
        """Raw bytes of messages that could not be accepted, with the reason."""
        return f"{self.prefix}.deadletter"

    @property
    def alerts(self) -> str:
        """Every coordination alert, Avro, keyed by patient."""
        return f"{self.prefix}.alerts"

    @property
    def alert_status(self) -> str:
        """Acknowledge/resolve commands from integrators, keyed by dedup key."""
        return f"{self.prefix}.alerts.status"

    @property
    def ops(self) -> str:
        """Operational alerts, such as a feed gone quiet."""
        return f"{self.prefix}.ops"

    def alerts_for(self, provider: str) -> str:
        """The alert topic one recipient provider's integrators subscribe to."""
        return f"{self.prefix}.alerts.provider.{provider}"
