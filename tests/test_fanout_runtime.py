"""The fan-out's runtime: its event loop (uvloop, else asyncio's) and the collector paused while
fan-outs run, given back when the last one ends, even when fan-outs overlap in threads or fail."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

import pytest

from xcoin_trading.live import event_loop
from xcoin_trading.live.fanout import _collector_paused


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_when_installed():
    pytest.importorskip("uvloop")
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_collector_paused_until_the_last_overlapping_fanout_ends():
    assert gc.isenabled()
    entered, release, seen = threading.Event(), threading.Event(), []

    def first() -> None:
        with _collector_paused():
            seen.append(gc.isenabled())
            entered.set()
            release.wait(10)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    with _collector_paused():
        seen.append(gc.isenabled())
    seen.append(gc.isenabled())  # the first fan-out still runs: still paused
    release.set()
    thread.join(10)
    assert seen == [False, False, False, False]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_collector_given_back_after_a_failed_fanout_and_left_off_if_it_was():
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError("an exchange call failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with _collector_paused():
            pass
        assert not gc.isenabled()  # whoever turned it off keeps it off
    finally:
        gc.enable()
