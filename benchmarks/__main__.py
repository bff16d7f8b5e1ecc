"""``python -m benchmarks``: the performance suite (see BENCHMARKS.md).

Figures (``--only`` picks some; the default runs all, in this order):

- ``core``: fastavro decode / decode+encode ceiling and the replay core on the same receipts
  (figures 1 and 2: the ratio is measured side by side in the same run), then what batched
  state would buy (``benchmarks/batched_state.py``: RocksDB write batches and one changelog
  record per key per batch, on the stage code's own writes);
- ``worker``: one and two Faust workers on the embedded broker, sustained receipts/s, and
  end-to-end latency at 400 and 4 000 receipts/s offered (figure 3);
- ``design``: the issue's design changes kept as switches (no RocksDB WAL on the replay core,
  packed internal records on one worker), before and after in interleaved pairs
  (``benchmarks/design.py``);
- ``profile``: a py-spy profile of one worker draining a backlog, by thread and call path
  (``benchmarks/profile_worker.py``);
- ``peer``: the plain confluent-kafka consume->produce loop (the transport ceiling) and a
  Quix Streams application running the same topology steps (figure 4);
- ``state``: cards, consents and households loaded into a worker's tables: RSS, RocksDB
  bytes, lookup rate, restore time of a fresh worker (figure 5);
- ``growth``: replay cost per receipt and memory at growing stream lengths (figure 6).

Every figure prints its table rows as it finishes and writes its section of
``benchmarks/results/latest.json`` at once, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.common import LATEST, Results, log, workload

FIGURES = ("core", "worker", "design", "profile", "peer", "state", "growth")

# (full, --quick) sizes
SIZES = {
    "core_receipts": (200_000, 10_000),
    "worker_receipts": (20_000, 2_000),
    "latency_s": (15.0, 5.0),
    "peer_receipts": (20_000, 2_000),
    "state_cards": (20_000, 5_000),  # noida-db loads ~300 register records/s here
    # the national register, written into the worker's tables in place (benchmarks/state.py)
    "state_full_cards": (4_000_000, 100_000),
    # design changes, before and after (benchmarks/design.py): interleaved pairs and sizes
    "design_pairs": (3, 1),
    "design_core_receipts": (20_000, 3_000),
    "design_worker_receipts": (10_000, 1_000),
    "profile_receipts": (15_000, 2_000),
    "growth": ([10_000, 100_000, 200_000], [2_000, 10_000, 30_000]),
    # population of the broker figures (its register is loaded before the clock starts)
    "broker_households": (5_000, 2_000),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--receipts", type=int, help="receipts for the replay core")
    ap.add_argument("--worker-receipts", type=int, help="receipt backlog for the worker figures")
    ap.add_argument(
        "--state-cards", type=int, help="cards (and consents) loaded through the broker"
    )
    ap.add_argument(
        "--state-full-cards",
        type=int,
        help="cards (and consents) built into the tables in place (0: skip)",
    )
    ap.add_argument(
        "--growth",
        type=lambda s: [int(x) for x in s.split(",")],
        help="growth checkpoints, e.g. 10000,100000,1000000",
    )
    ap.add_argument("--households", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-two-workers", action="store_true")
    ap.add_argument(
        "--merge", action="store_true", help="keep the other figures of the existing latest.json"
    )
    args = ap.parse_args(argv)
    q = 1 if args.quick else 0

    def size(name: str):  # type: ignore[no-untyped-def]
        return SIZES[name][q]

    figures = args.only or list(FIGURES)
    results = Results(vars(args))
    if args.merge and LATEST.exists():
        import json

        old = json.loads(LATEST.read_text())
        results.data["figures"] = old.get("figures", {})
        results.data["merged_from"] = old.get("started")
    t_all = time.monotonic()
    for fig in figures:
        t0 = time.monotonic()
        log(f"--- figure {fig}")
        try:
            if fig == "core":
                from benchmarks import core

                n = args.receipts or size("core_receipts")
                w = workload(n, args.households, args.seed)
                results.put("core", core.run(w))
                from benchmarks import batched_state

                # On the first 20,000 receipts' worth of events: the figures are per receipt.
                bs = workload(min(n, 20_000), args.households, args.seed)
                results.put("batched_state", batched_state.run(bs))
            elif fig == "worker":
                from benchmarks import broker_bench

                n = args.worker_receipts or size("worker_receipts")
                results.put(
                    "worker",
                    broker_bench.run(
                        n,
                        args.households,
                        args.seed,
                        size("latency_s"),
                        two=not args.no_two_workers,
                    ),
                )
            elif fig == "design":
                from benchmarks import design

                results.put(
                    "design",
                    design.run(
                        workload(size("design_core_receipts"), args.households, args.seed),
                        size("design_worker_receipts"),
                        size("broker_households"),
                        args.seed,
                        size("design_pairs"),
                    ),
                )
            elif fig == "profile":
                from benchmarks import profile_worker

                results.put(
                    "profile",
                    profile_worker.run(
                        size("profile_receipts"), size("broker_households"), args.seed
                    ),
                )
            elif fig == "peer":
                from benchmarks import peer

                n = args.worker_receipts or size("peer_receipts")
                results.put("peer", peer.run(n, size("broker_households"), args.seed))
            elif fig == "state":
                from benchmarks import state

                full = args.state_full_cards
                results.put(
                    "state",
                    state.run(
                        args.state_cards or size("state_cards"),
                        size("state_full_cards") if full is None else full,
                    ),
                )
            elif fig == "growth":
                from benchmarks import growth

                results.put(
                    "growth", growth.run(args.growth or size("growth"), args.households, args.seed)
                )
        except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the others
            log(f"figure {fig} FAILED: {type(exc).__name__}: {exc}")
            results.put(fig, {"error": f"{type(exc).__name__}: {exc}"})
        log(f"--- figure {fig} took {time.monotonic() - t0:.0f}s")
    results.data["total_seconds"] = round(time.monotonic() - t_all, 1)
    # The targets, from the figures of this run (and, with --merge, the kept ones).
    from benchmarks.report import design, target_rows, targets

    results.data["targets"] = target_rows(results.data["figures"])
    results.save()
    print("\nDesign changes, before and after in this run (BENCHMARKS.md):\n")
    print(design(results.data["figures"]))
    print("\nTargets (BENCHMARKS.md):\n")
    print(targets(results.data["figures"]))
    print(f"\nwrote {LATEST} ({results.data['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
