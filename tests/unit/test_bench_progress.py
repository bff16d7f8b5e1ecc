"""The worker benchmark's steady-state window (benchmarks.broker_bench.Progress.steady)."""

from __future__ import annotations

import pytest

from benchmarks.broker_bench import Progress


def _progress(samples: list[tuple[float, int, float]]) -> Progress:
    p = Progress([], period=1.0)
    p.samples = samples
    return p


def test_steady_rate_leaves_out_a_slow_start_and_tail() -> None:
    # 2 s of start-up doing nothing, then 1 000 records/s for 10 s (half a CPU-s per s),
    # then 5 s of tail (commit interval, lag poll) doing nothing.
    samples = [(float(t), 0, 0.0) for t in range(3)]
    samples += [(2.0 + t, 1000 * t, 0.5 * t) for t in range(1, 11)]
    samples += [(12.0 + t, 10_000, 5.0) for t in range(1, 6)]
    st = _progress(samples).steady(n_receipts=2_500)
    # 10 000 records for 2 500 receipts: 250 receipts/s; 2 000 receipts in 8 s and 4 CPU-s.
    assert st["receipts_per_s"] == pytest.approx(250.0)
    assert st["receipts_per_worker_cpu_s"] == pytest.approx(500.0)
    assert st["seconds"] == pytest.approx(8.0)
    assert st["starts_after_s"] == pytest.approx(3.0)
    assert st["tail_s"] == pytest.approx(6.0)
    # The drain figure over the same run is far lower: 2 500 receipts in 17 s.
    assert st["receipts_per_s"] / 1.5 > 2_500 / 17


def test_crossings_are_interpolated_between_samples() -> None:
    # Two samples 10 s apart around the whole drain: the window is 80 % of it.
    st = _progress([(0.0, 0, 0.0), (5.0, 500, 1.0), (10.0, 1000, 2.0)]).steady(100)
    assert st["seconds"] == pytest.approx(8.0)
    assert st["receipts_per_s"] == pytest.approx(10.0)


def test_no_work_or_too_few_samples_gives_nothing() -> None:
    assert _progress([(0.0, 5, 0.0), (1.0, 5, 0.1), (2.0, 5, 0.2)]).steady(10) == {}
    assert _progress([(0.0, 0, 0.0), (1.0, 9, 0.1)]).steady(10) == {}
