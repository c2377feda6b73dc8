"""The request/answer handshake between a command and a component of the running daemon
(``component.request_and_wait``), with a responder that answers as the components do: it reads the request
file, does the work, writes the answer with the request's token."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from trainserve.local.component import read_message, request_and_wait, write_token


def _responder(state_dir, stop: threading.Event, seen: list[str], work_seconds: float = 0.2) -> None:
    answered = None
    while not stop.is_set():
        message = read_message(state_dir / "job.request")
        if message is not None and message["token"] != answered:
            time.sleep(work_seconds)  # the work, during which another command may ask
            seen.append(message["token"])
            write_token(state_dir / "job.done", message["token"], n=message["n"] * 10)
            answered = message["token"]
        time.sleep(0.02)


def test_commands_asking_at_once_each_get_their_own_answer(tmp_path):
    """Three commands at once (e.g. three `monitor run`): the request file holds one message, so without
    taking turns the last writer's request replaced the others', and they waited out their timeout."""
    stop, seen = threading.Event(), []
    worker = threading.Thread(target=_responder, args=(tmp_path, stop, seen), daemon=True)
    worker.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda n: request_and_wait(tmp_path, "job.request", "job.done", 10.0, n=n), [1, 2, 3]
                )
            )
    finally:
        stop.set()
        worker.join(5)
    assert [a["n"] if a else None for a in answers] == [10, 20, 30]
    assert len(seen) == 3  # each request was done once


def test_no_answer_in_time_is_none(tmp_path):
    started = time.monotonic()
    assert request_and_wait(tmp_path, "job.request", "job.done", 0.3, n=1) is None
    assert time.monotonic() - started < 2


def test_a_closed_busy_meter_refuses_requests_after_those_in_flight_finish():
    """How the local API stops: no request is served once stopping, and the stop waits for those in flight."""
    from trainserve.local.component import BusyMeter

    meter = BusyMeter()
    assert meter.enter() is True
    closing = threading.Thread(target=meter.close, args=(5.0,))
    closing.start()
    time.sleep(0.2)
    assert closing.is_alive()  # waiting for the request in flight
    assert meter.enter() is False  # and refusing new ones
    meter.exit()
    closing.join(2)
    assert not closing.is_alive()
    assert meter.enter() is False
