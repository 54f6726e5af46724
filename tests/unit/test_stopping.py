"""SIGINT/SIGTERM during training: stop at once, at the next step, or after the write in progress."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from training.stopping import Interrupted, StopRequests


def send(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)  # delivered to this (main) thread before kill returns to Python


def test_outside_the_loop_a_signal_stops_at_once():
    with StopRequests() as stop, pytest.raises(Interrupted) as err:
        send()
    assert err.value.path is None
    assert "nothing to resume" in str(err.value)
    assert stop.requested


def test_in_the_loop_the_first_signal_is_a_request_the_second_stops():
    with StopRequests() as stop, stop.loop():
        send(signal.SIGINT)
        assert stop.requested
        stop.checkpoint = Path("run/checkpoint")
        with pytest.raises(Interrupted) as err:
            send()
    assert err.value.path == Path("run/checkpoint")
    assert "--resume" in str(err.value)


def test_a_write_in_progress_is_never_cut():
    with StopRequests() as stop:
        with stop.critical():
            send()
            send(signal.SIGINT)  # twice: still recorded only
            written = True
        assert written and stop.requested
        with pytest.raises(Interrupted):  # after the write, signals act again
            send()


def test_handlers_are_put_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopRequests():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before
