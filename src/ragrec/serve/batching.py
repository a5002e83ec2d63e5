"""Micro-batching: concurrent requests that can share a forward pass are run as one batch.

Requests are queued on the event loop. A collector takes the first waiting request, waits up to
``window_s`` for more (never past ``max_batch``), groups them by key (requests of one key can run
in one call: same scenario, task, list length and options) and runs each group as one call of
``run(key, payloads)`` on a single worker thread, off the event loop. While the worker is busy,
new requests queue up and form the next batch, so under load batches fill without waiting for
the window. With ``enabled=False`` every request is its own call on the same worker (the
one-request-per-forward baseline the benchmark compares against).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """See module docstring. ``on_batch(size)`` is called for every call made (metrics)."""

    def __init__(
        self,
        run: Callable[[Hashable, Sequence[Any]], Sequence[Any]],
        *,
        window_s: float = 0.01,
        max_batch: int = 16,
        enabled: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0, got {max_batch}, {window_s}")
        self.run, self.window_s, self.max_batch, self.enabled = run, window_s, max_batch, enabled
        self.on_batch = on_batch or (lambda n: None)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragrec-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, key: Hashable, payload: Any) -> Any:
        """The result of ``payload``: ``run``'s entry for it, or the exception its batch raised."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.on_batch(1)
            return (await loop.run_in_executor(self._executor, self.run, key, [payload]))[0]
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect())
        future = loop.create_future()
        assert self._queue is not None
        await self._queue.put((key, payload, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[Hashable, list] = {}
            for key, payload, future in batch:
                groups.setdefault(key, []).append((payload, future))
            for key, entries in groups.items():
                live = [(p, f) for p, f in entries if not f.done()]  # a client that timed out is not run
                if not live:
                    continue
                self.on_batch(len(live))
                try:
                    results = await loop.run_in_executor(self._executor, self.run, key, [p for p, _ in live])
                except Exception as exc:  # the whole group failed: every request in it gets the error
                    for _, f in live:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for (_, f), result in zip(live, results):
                    if not f.done():
                        f.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)
