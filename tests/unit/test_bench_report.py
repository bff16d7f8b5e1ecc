"""The targets table ``make bench`` prints at its end (benchmarks/report.py)."""

from __future__ import annotations

from benchmarks.report import target_rows, targets

FIGURES = {
    "core": {"ratio_core_to_decode_encode": 0.21, "ratio_core_to_decode_encode_cpu": 0.2},
    "worker": {
        "one_worker": {
            "receipts_per_worker_cpu_s": 1900,
            "steady": {"receipts_per_worker_cpu_s": 2000},
        },
        "two_workers": {"steady": {"receipts_per_worker_cpu_s": 1700}},
        "ratio_two_to_one": 1.1,
        "latency_400_own_core": {"p99_ms": 101.0},
        "latency_400": {"p99_ms": 300.0},
    },
    "peer": {
        "faust_worker": {"receipts_per_worker_cpu_s": 1500},
        "quix": {"receipts_per_worker_cpu_s": 1000},
        "ratio_faust_to_quix": 1.2,
    },
}


def test_each_target_is_judged_from_the_figures_of_the_run() -> None:
    rows = {r["figure"].split(",")[0]: r for r in target_rows(FIGURES)}
    assert rows["one worker"]["value"] == 2000 and rows["one worker"]["met"] is True
    assert rows["replay core / fastavro decode + encode ceiling"]["met"] is True
    faust = rows["Faust worker / like-for-like Quix peer"]
    assert faust["value"] == 1.5 and faust["met"] is True
    scaling = rows["two workers' scaling efficiency (per worker CPU-s"]
    assert scaling["value"] == 0.85 and scaling["met"] is False
    p99 = rows["p99 purchase -> counter at 400/s"]
    assert p99["value"] == 101.0 and p99["met"] is False
    # The national-state figure was not part of this run: not measured, neither met nor missed.
    rss = rows["worker RSS"]
    assert rss["value"] is None and rss["met"] is None


def test_the_table_marks_missed_and_unmeasured_targets() -> None:
    table = targets(FIGURES)
    assert table.count("**missed**") == 2
    assert "| not measured | — |" in table
    assert len(table.splitlines()) == 2 + 6


def test_design_changes_are_compared_pair_by_pair_in_the_order_a_b_b_a() -> None:
    from benchmarks.design import _compare, _order
    from benchmarks.report import design

    # A B B A: a drift of the machine's speed over the run falls on both sides alike.
    assert _order(3) == [False, True, True, False, False, True]
    c = _compare([100.0, 200.0], [150.0, 200.0])
    # The ratio of each pair, then their mean: not the ratio of the means (175/150).
    assert c["ratio_mean"] == 1.25 and (c["ratio_min"], c["ratio_max"]) == (1.0, 1.5)
    table = design({"design": {"pairs": 2, "no_wal_core": {**c, "receipts": 20_000}}})
    assert "| no RocksDB write-ahead log | replay core, receipts per CPU-s (20,000 receipts) |" in (
        table
    )
    assert "| 150 | 175 | 1.25 (1.0-1.5) |" in table
    assert design({}).startswith("design changes: not measured")
