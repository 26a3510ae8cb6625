"""An ansible-rulebook event source for ``bench/bench_ansible.py``: the JSON lines of a file.

    sources:
      - bench_lines: {path: /tmp/events.jsonl}

It puts ``{"event": "BENCH_START"}`` first and ``{"event": "BENCH_END"}``
last, around one event per line (decoded with the standard ``json``), then
returns, which makes ansible-rulebook shut down once its rules and actions are
done.  The rulebook's two sentinel rules print a line for each, which the bench
timestamps: start-up ends when the first one prints, the stream when the second.
"""

import asyncio
import json
from typing import Any


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Put the sentinels and every line of ``args["path"]`` on ``queue``."""
    await queue.put({"event": "BENCH_START"})
    with open(args["path"], "rb") as f:  # noqa: ASYNC230 -- a local file, read on the loop as replay reads
        for line in f:
            await queue.put(json.loads(line))
    await queue.put({"event": "BENCH_END"})
