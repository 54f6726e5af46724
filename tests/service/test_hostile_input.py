"""Expensive inputs that look valid, sent at once, against the default limits: each is
refused with a 4xx within a bound, /livez keeps answering, and memory stays put."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache

import httpx
import pytest

from tests.support.images import blank_png, ico_holding, many_page_tiff
from tests.support.servers import total
from visiontune.localserver import resident_bytes

COPIES = 8  # of each kind, all in flight together
ANSWER_WITHIN_S = 15.0
LIVEZ_WITHIN_S = 1.0
RSS_GROWTH_BOUND = 300 * 1024 * 1024


@cache
def hostile_requests() -> dict[str, tuple[dict, str]]:
    """Request arguments by kind, with the rejection reason each must get."""
    sixteen_bit = blank_png(8000, 5000)  # 40 Mpx of 16-bit grey, about 80 KB on the wire
    ico = ico_holding(blank_png(10_000, 10_000, bit_depth=8))  # a 100 Mpx PNG icon
    tiff = many_page_tiff(1000, (6000, 5000))  # 1000 pages of 30 Mpx
    keys = {"images": [base64.b64encode(sixteen_bit[:64]).decode()]}
    keys.update((f"k{i}", 0) for i in range(300_000))  # about 3.6 MB of JSON
    return {
        "png_16_bit_40_mpx": ({"files": {"images": ("a.png", sixteen_bit)}}, "too_many_pixels"),
        "ico_100_mpx_png": ({"files": {"images": ("a.ico", ico)}}, "unsupported_format"),
        "tiff_1000_pages": ({"files": {"images": ("a.tiff", tiff)}}, "too_many_pixels"),
        "json_300000_keys": (
            {"content": json.dumps(keys).encode(), "headers": {"content-type": "application/json"}},
            "json_too_complex",
        ),
    }


def send(server, kind: str) -> tuple[str, float, httpx.Response]:
    arguments, _ = hostile_requests()[kind]
    path = "/classify_json" if "content" in arguments else "/classify"
    started = time.perf_counter()
    with httpx.Client(base_url=server.url, headers=server.client.headers, timeout=60) as client:
        response = client.post(path, **arguments)
    return kind, time.perf_counter() - started, response


# Polls in a process of its own, so the senders' threads cannot delay its clock.
POLL_LIVEZ = """
import sys, time, httpx
with httpx.Client(timeout=10) as client:
    while True:
        started = time.perf_counter()
        try:
            status = client.get(sys.argv[1]).status_code
        except httpx.HTTPError as err:
            status = type(err).__name__
        print(f"{time.perf_counter() - started:.4f} {status}", flush=True)
        time.sleep(0.1)
"""


@contextmanager
def livez_watch(url: str) -> Iterator[list[tuple[float, str]]]:
    """(seconds, status) of every /livez poll made while the block runs."""
    polls: list[tuple[float, str]] = []
    poller = subprocess.Popen(
        [sys.executable, "-c", POLL_LIVEZ, f"{url}/livez"], stdout=subprocess.PIPE, text=True
    )
    try:
        lines = [poller.stdout.readline()]  # polling has begun before the block runs
        yield polls
    finally:
        poller.terminate()
        output, _ = poller.communicate(timeout=30)
    lines += output.splitlines()
    polls += [(float(seconds), status) for seconds, status in (line.split() for line in lines)]


def test_expensive_inputs_are_refused_quickly_and_harm_nothing(guarded_server, digit_files):
    server = guarded_server
    kinds = list(hostile_requests()) * COPIES  # built here, before anything is timed
    before = server.metrics()
    rss_before = resident_bytes(server.process.pid)
    started = time.perf_counter()
    with livez_watch(server.url) as polls, ThreadPoolExecutor(len(kinds)) as pool:
        answers = list(pool.map(lambda kind: send(server, kind), kinds))
    wall = time.perf_counter() - started
    rss_growth = resident_bytes(server.process.pid) - rss_before
    slowest_livez = max(seconds for seconds, _ in polls)
    print(
        f"{len(kinds)} expensive requests answered in {wall:.1f}s (slowest "
        f"{max(s for _, s, _ in answers):.2f}s); /livez polled {len(polls)} times, slowest "
        f"{slowest_livez * 1000:.0f} ms; server RSS {rss_before / 2**20:.0f} MB, "
        f"growth {rss_growth / 2**20:+.0f} MB"
    )

    for kind, seconds, response in answers:
        reason = hostile_requests()[kind][1]
        assert response.status_code == 400, (kind, response.text[:300])
        assert [p["type"] for p in response.json()["detail"]] == [reason], kind
        assert len(response.content) < 1000, "the answer names the problem, not every key"
        assert seconds < ANSWER_WITHIN_S, (kind, seconds)
    assert len(polls) >= 5 and {status for _, status in polls} == {"200"}
    assert slowest_livez < LIVEZ_WITHIN_S
    assert rss_growth < RSS_GROWTH_BOUND
    after = server.metrics()
    for reason, count in {
        "too_many_pixels": 16,
        "unsupported_format": 8,
        "json_too_complex": 8,
    }.items():
        counted = total(after, "visiontune_rejected_inputs_total", reason=reason)
        assert counted - total(before, "visiontune_rejected_inputs_total", reason=reason) == count
    assert server.classify([digit_files["3"][0]]).status_code == 200


@pytest.mark.parametrize("kind", ["png_16_bit_40_mpx", "json_300000_keys"])
def test_one_expensive_request_is_answered_in_a_second(guarded_server, kind):
    _, seconds, response = send(guarded_server, kind)
    assert response.status_code == 400
    assert seconds < 1.0
