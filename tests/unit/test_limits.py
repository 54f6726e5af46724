"""The request timeout that replaces BentoML's: 504 when no answer started in time, and
no timer left armed once a request is answered; every 503 says when to retry."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.errors import error_response
from service.limits import RETRY_AFTER_S, Deadline, RetryAfter, in_decode_thread
from service.settings import settings


async def slow(request):
    await asyncio.sleep(float(request.query_params["seconds"]))
    return PlainTextResponse("done")


async def full(request):
    return error_response(503, "server_full", "full")


APP = Starlette(routes=[Route("/slow", slow), Route("/full", full)])


def armed_timers() -> int:
    """Timers of the running loop still to fire (a cancelled one holds nothing: its
    callback and arguments are dropped)."""
    return sum(not timer.cancelled() for timer in asyncio.get_running_loop()._scheduled)


def test_deadline_answers_504_and_disarms_its_timer():
    async def scenario():
        app = Deadline(APP, timeout=0.5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            timers_before = armed_timers()
            fast = await client.get("/slow", params={"seconds": 0})
            timers_after = armed_timers()
            late = await client.get("/slow", params={"seconds": 5})
        return fast, late, timers_after - timers_before

    fast, late, armed = asyncio.run(scenario())
    assert fast.status_code == 200 and fast.text == "done"
    assert armed == 0, "a timer outlived its request"
    assert late.status_code == 504 and "0.5 seconds" in late.json()["error"]


def test_every_503_carries_retry_after():
    async def scenario():
        transport = httpx.ASGITransport(app=RetryAfter(APP))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/full"), await client.get("/slow", params={"seconds": 0})

    refused, answered = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
    assert "retry-after" not in answered.headers


async def streams_slowly(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(1.0)
    await send({"type": "http.response.body", "body": b"late but whole"})


def test_deadline_never_cuts_an_answer_that_has_started():
    async def scenario():
        transport = httpx.ASGITransport(app=Deadline(streams_slowly, timeout=0.3))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    answered = asyncio.run(scenario())
    assert answered.status_code == 200 and answered.text == "late but whole"


REQUEST = contextvars.ContextVar("request")


def test_decodes_run_at_most_slots_at_once_in_arrival_order_and_in_their_context():
    slots = settings.decode_slots()
    lock, running, most, started = threading.Lock(), [0], [0], []

    def decode(index: int) -> str:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            started.append(index)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return REQUEST.get()

    async def one(index: int) -> str:
        REQUEST.set(f"request {index}")
        return await in_decode_thread(decode, index)

    async def scenario():
        tasks = []
        for index in range(3 * slots):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(0)  # each task submits before the next is created
        return await asyncio.gather(*tasks)

    answers = asyncio.run(scenario())
    assert answers == [f"request {i}" for i in range(3 * slots)]
    assert most[0] == slots
    assert set(started[:slots]) == set(range(slots))  # the first to arrive start first
