"""The supervisor's restart schedule: at once after a healthy run, then exponential backoff."""

from __future__ import annotations

from onemodel.master.embedded import restart_delay_s


def test_the_first_death_after_a_healthy_run_restarts_at_once() -> None:
    assert restart_delay_s(0) == 0.0


def test_deaths_in_a_row_back_off_exponentially_up_to_30_s() -> None:
    delays = [restart_delay_s(crashes) for crashes in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)
    assert max(delays) == 30.0
    assert restart_delay_s(100) == 30.0
