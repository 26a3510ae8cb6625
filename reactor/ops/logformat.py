"""Log output: human text, or one JSON object per line (``log.format: json``) with rule/VM/run ids."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["JSONFormatter", "configure"]

_EXTRA = ("rule", "vm", "run", "event")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA:
            value = getattr(record, key, None)
            if value is not None:
                obj[key] = value
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ids = [f"{k}={getattr(record, k)}" for k in ("vm", "run") if getattr(record, k, None) is not None]
        return f"{base} [{' '.join(ids)}]" if ids else base


def configure(level: int, fmt: str = "text") -> None:
    """Set up the root logger for the CLI and the daemon (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # qemu.qmp logs every message at debug level; keep it quiet unless asked for
    logging.getLogger("qemu.qmp").setLevel(max(level, logging.WARNING))
