"""Running a world as a process: stop cleanly on SIGINT/SIGTERM with the current tick flushed."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from movielab.world.engine import Stats, World

logger = logging.getLogger(__name__)


def run_world(
    world: World,
    until: float | None,
    stop: threading.Event | None = None,
    on_tick: Callable[[World], None] | None = None,
    **checkpoints,
) -> Stats:
    """Run until `until` (simulated), `stop` or a signal; the tick in progress completes, the sink is flushed.

    `checkpoints` (`checkpoint_every`, `on_checkpoint`) go to `World.run`.
    """
    stop = stop or threading.Event()
    previous = {}

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping after the current tick", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return world.run(until=until, stop=stop, on_tick=on_tick, **checkpoints)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
