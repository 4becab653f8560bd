"""The event loop the fan-out, the balance read-ahead and the reconciler run their requests on.

uvloop's loop (libuv, in C) schedules callbacks, tasks and socket reads/writes with less Python per
request than asyncio's own: a candle's fan-out is tens of thousands of requests on one loop, so that
overhead is client CPU on the candle's critical path. Without uvloop (another platform, or a slim
install) the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the fallback keeps slim installs working
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)` on uvloop when installed (Python 3.11's asyncio.run takes no loop factory)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)
