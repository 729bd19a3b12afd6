"""A minimal server-sent-events line parser (the model server's ``lm.generate_stream``).

Only what sax servers send: ``event:`` and ``data:`` fields, blank-line dispatch, ``:`` comments
(keep-alive pings). Fed line by line so the sync and async readers share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Event:
    event: str
    data: str


@dataclass
class SSEParser:
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        """Consumes one line (without its line ending); returns an event when one completes."""
        if not line:
            if not self._data and not self._event:
                return None
            done = Event(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None
