"""read_ahead: the checks' carrier reads in flight while the answers before them are recorded."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest

from telegence_activation.sensors.base import read_ahead


class Reads:
    """A read that records how many reads run at once, and can be held until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[int] = []

    def __call__(self, key: int) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(key)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        if key == 13:
            raise RuntimeError("read 13 failed")
        return f"answer {key}"


def test_answers_come_in_order_with_the_next_reads_already_in_flight() -> None:
    reads = Reads()
    results = list(read_ahead(range(12), reads, readers=4))
    assert results == [(k, f"answer {k}") for k in range(12)]
    assert 2 <= reads.most <= 4  # overlapped, never more than `readers` at once


def test_the_caller_is_handed_an_answer_while_later_reads_run() -> None:
    reads = Reads()
    answers = read_ahead(range(10), reads, readers=3)
    first = next(answers)
    assert first == (0, "answer 0")
    time.sleep(0.1)
    assert set(reads.started) >= {1, 2, 3}  # read ahead while the caller was busy with the first
    assert max(reads.started) <= 3  # but no further than the window
    answers.close()


def test_a_failed_read_raises_at_its_turn_after_the_answers_before_it() -> None:
    reads = Reads()
    got: list[int] = []
    with pytest.raises(RuntimeError, match="read 13 failed"):
        for key, _ in read_ahead(range(10, 20), reads, readers=4):
            got.append(key)
    assert got == [10, 11, 12]


def test_stopping_early_lets_the_reads_in_flight_finish_and_starts_no_more() -> None:
    reads = Reads()
    with closing(read_ahead(range(100), reads, readers=4)) as answers:
        for key, _ in answers:
            if key == 2:
                break
    assert reads.running == 0
    assert len(reads.started) <= 3 + 4


def test_one_reader_reads_one_at_a_time_in_order() -> None:
    reads = Reads()
    assert [k for k, _ in read_ahead([3, 1, 2], reads, readers=1)] == [3, 1, 2]
    assert reads.most == 1 and reads.started == [3, 1, 2]
