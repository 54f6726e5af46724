"""The request timeout that replaces BentoML's: 504 when no answer started in time, and
no timer left armed once a request is answered; every 503 says when to retry."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from service.limits import RETRY_AFTER_S, Deadline, RetryAfter


async def slow(request):
    await asyncio.sleep(float(request.query_params["seconds"]))
    return PlainTextResponse("done")


async def full(request):
    return JSONResponse({"error": "full"}, status_code=503)


APP = Starlette(routes=[Route("/slow", slow), Route("/full", full)])


def test_deadline_answers_504_and_disarms_its_timer():
    async def scenario():
        app = Deadline(APP, timeout=0.5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            timers_before = len(asyncio.get_running_loop()._scheduled)
            fast = await client.get("/slow", params={"seconds": 0})
            timers_after = len(asyncio.get_running_loop()._scheduled)
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
