"""Run a coroutine to its end from synchronous test code, in a thread of its own.

``asyncio.run`` refuses to start where an event loop is already running in the thread, and
Playwright's sync API keeps one running in the main thread for as long as the session's browser
lives (the browser tests run first): a fresh thread has no loop."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_async(coro):
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-asyncio") as pool:
        return pool.submit(asyncio.run, coro).result()
