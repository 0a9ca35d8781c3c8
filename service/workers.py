"""How ``ganserve serve`` runs: the event loop it runs on.

uvloop (libuv) runs the same grpc.aio server with less CPU per call than asyncio's own loop
(measured on the fixed-response floor server: ~15-25% less CPU per call,
benchmarks/serve_throughput.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from .config import ServeConfig
from .server import serve

log = logging.getLogger(__name__)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``name`` stands for (None: asyncio's default)."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {EVENT_LOOPS}, got {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def run_loop(main: Coroutine, event_loop: str = "auto") -> None:
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main)


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    run_loop(serve(config), config.event_loop)
