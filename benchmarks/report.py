"""``python -m benchmarks.report``: the Markdown tables of BENCHMARKS.md from latest.json."""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks.common import LATEST


def _n(x: Any, d: int = 0) -> str:
    if x is None:
        return "not reached"
    return f"{x:,.{d}f}".replace(",", " ")


def figures(f: dict[str, Any]) -> str:
    out = [
        "| figure | receipts/s | line items/s | receipts per CPU-s | note |",
        "|---|---:|---:|---:|---|",
    ]
    c = f.get("core", {})
    if "core" in c:
        ce = c["ceiling"]
        for k, label in (
            ("decode", "fastavro decode (best of 3)"),
            ("decode_encode", "fastavro decode + encode (ceiling)"),
            ("compiled_decode", "compiled codec decode (best of 3)"),
            ("compiled_decode_encode", "compiled codec decode + encode (not the ceiling)"),
            ("json_identified_encode_decode", "orjson encode + decode of receipts.identified"),
        ):
            if k not in ce:  # runs before the compiled codec
                continue
            r = ce[k]
            out.append(
                f"| {label} | {_n(r['receipts_per_s'])} | {_n(r['line_items_per_s'])} | "
                f"{_n(r['receipts_per_cpu_s'])} | {ce['receipts']:,} receipts |"
            )
        r = c["core"]
        out.append(
            f"| replay core, RocksDB state | {_n(r['receipts_per_s'])} | "
            f"{_n(r['line_items_per_s'])} | {_n(r['receipts_per_cpu_s'])} | "
            f"state {c['rocksdb_bytes'] / 1e6:.0f} MB |"
        )
    w = f.get("worker", {})
    for k, label in (
        ("one_worker", "one Faust worker, sustained"),
        ("two_workers", "two Faust workers, sustained"),
    ):
        if k in w and "error" in w[k]:
            out.append(f"| {label} | failed | | | {w[k]['error'][:160]} |")
        elif k in w:
            r = w[k]
            rss = "/".join(f"{b / 2**20:.0f}" for b in r["worker_rss_bytes"])
            out.append(
                f"| {label} | {_n(r['receipts_per_s'])} | {_n(r['line_items_per_s'])} | "
                f"{_n(r['receipts_per_worker_cpu_s'])} | {r['receipts']:,} backlog, "
                f"RSS {rss} MiB |"
            )
            st = r.get("steady") or {}
            if st.get("receipts_per_s"):
                out.append(
                    f"| {label.replace(', sustained', '')}, steady state | "
                    f"{_n(st['receipts_per_s'])} | | {_n(st['receipts_per_worker_cpu_s'])} | "
                    f"{st['window']} ({st['seconds']:.1f} s; start {st['starts_after_s']:.1f} s "
                    f"and tail {st['tail_s']:.1f} s left out) |"
                )
    p = f.get("peer", {})
    if "transport_ceiling" in p:
        r = p["transport_ceiling"]
        out.append(
            f"| confluent-kafka consume→produce, no processing | {_n(r['receipts_per_s'])} |"
            f" | | includes producing the backlog |"
        )
    if "faust_hop" in p and "error" not in p["faust_hop"]:
        r = p["faust_hop"]
        out.append(
            f"| Faust consume→produce, no processing (worker's engine settings) | "
            f"{_n(r['receipts_per_s'])} | | {_n(r['receipts_per_worker_cpu_s'])} | "
            f"broker {r['broker_cpu_s']} CPU-s |"
        )
    if "faust_worker" in p:
        r = p["faust_worker"]
        out.append(
            f"| Faust worker (peer run) | {_n(r['receipts_per_s'])} | | "
            f"{_n(r['receipts_per_worker_cpu_s'])} | |"
        )
    if "quix" in p:
        r = p["quix"]
        if "error" in r:
            out.append(f"| Quix Streams peer | failed | | | {r['error'][:200]} |")
        else:
            same = p.get("same_work", {})
            label = "Quix Streams peer (same stages, hops via the broker)"
            if "same_work" not in same:
                # A run of the earlier peer (benchmarks/quix_peer.py before the rewrite).
                label, note = "Quix Streams peer (same steps, stages chained in process)", ""
            elif same["same_work"]:
                note = "same records per output topic as the Faust run"
                if same.get("changelog_difference"):
                    note += "; changelog records Faust − Quix (timer sweeps): " + ", ".join(
                        f"{t.removeprefix('changelog:')} {d:+d}"
                        for t, d in same["changelog_difference"].items()
                    )
            else:
                note = "records per topic differ from the Faust run (Faust/Quix): " + ", ".join(
                    f"{t} {a}/{b}" for t, (a, b) in same["mismatched"].items()
                )
            out.append(
                f"| {label} | {_n(r['receipts_per_s'])} | | "
                f"{_n(r['receipts_per_cpu_s'])} | {note} |"
            )
    lines = ["\n".join(out)]
    lat = []
    for k, where in (
        ("latency_200", "shared cores"),
        ("latency_400", "shared cores"),
        ("latency_4000", "shared cores"),
        ("latency_200_own_core", "worker on its own core"),
        ("latency_400_own_core", "worker on its own core"),
    ):
        if k in w:
            r = w[k]
            cpu = (
                f"{r['worker_cpu_per_s']} / {r['broker_cpu_per_s']}"
                if "worker_cpu_per_s" in r
                else ""
            )
            lat.append(
                f"| {r['offered_per_s']:.0f}/s (sent {r['achieved_send_per_s']:.0f}/s) | {where} | "
                f"{_n(r['p50_ms'])} | {_n(r['p95_ms'])} | {_n(r['p99_ms'])} | "
                f"{_n(r.get('max_ms'))} | {cpu} | "
                f"{r['seen']:,} of {r['sent']:,} within {r['wait_s']:.0f} s of the end |"
            )
    if lat:
        lines.append(
            "\nEnd-to-end latency, one worker (send → receipts.totals, ms; CPU-s per s of "
            "sending):\n\n"
            "| offered | cores | p50 | p95 | p99 | max | worker / broker CPU | seen |\n"
            "|---|---|---:|---:|---:|---:|---|---|\n" + "\n".join(lat)
        )
    s = f.get("state", {})
    if "cards" in s:
        lines.append(
            f"\nScale of state, loaded through the broker ({s['cards']:,} cards + "
            f"{s['consents']:,} consents, {s['households']:,} households):\n\n"
            "| figure | measured |\n|---|---:|\n"
            f"| load into the tables incl. start-up (s) | {s['load_s']} |\n"
            f"| register records/s through the worker | {_n(s['records_per_s_load'])} |\n"
            f"| worker RSS after load (MiB) | {s['worker_rss_bytes'] / 2**20:.0f} |\n"
            f"| RocksDB on disk (MB) | {s['rocksdb_bytes'] / 1e6:.1f} |\n"
            f"| fresh worker: start, restore, probe (s) | {s['restore_s']} |\n"
            f"| restored worker RSS (MiB) | {s['restored_worker_rss_bytes'] / 2**20:.0f} |\n"
            f"| random point lookups/s (rocksdict) | {_n(s['lookups'].get('lookups_per_s'))} |"
        )
    full = s.get("full", {})
    if "cards" in full:
        r = full["restore_sample"]
        lk = full["lookups"]
        lines.append(
            f"\nScale of state, national size built in place ({full['cards']:,} cards, "
            f"{full['consents']:,} consents, {full['households']:,} households):\n\n"
            "| figure | measured |\n|---|---:|\n"
            f"| state records written by the stage code | {full['state_writes']:,} "
            f"in {full['build_s']} s |\n"
            f"| RocksDB on disk (MB) | {full['rocksdb_bytes'] / 1e6:,.0f} |\n"
            f"| worker RSS, empty state (MiB) | {full['worker_rss_empty_bytes'] / 2**20:.0f} |\n"
            f"| worker start-up on this state, to its first record (s) | "
            f"{full['worker_start_s']} |\n"
            f"| worker RSS after start-up (MiB) | "
            f"{full['worker_rss_started_bytes'] / 2**20:.0f} |\n"
            f"| worker RSS after {full['probe_receipts']:,} receipts of random cards (MiB) | "
            f"{full['worker_rss_after_probe_bytes'] / 2**20:.0f} |\n"
            f"| those receipts/s | {_n(full['probe_receipts_per_s'])} |\n"
            f"| random point lookups/s, {lk['keys']:,} keys (rocksdict) | "
            f"{_n(lk['lookups_per_s'])} ({lk['hits']:,} of {lk['samples']:,} found) |\n"
            f"| restore sample: {r['changelog_records']:,} changelog records "
            f"({r['customers']:,} customers): empty start-up of the same app (s) | "
            f"{r['empty_start_s']} |\n"
            + "\n".join(
                f"| {label}: fresh worker to its first record (s) / records/s / RSS MiB / "
                f"national state estimated (s) | {r[k]['restore_s']} / "
                f"{_n(r[k]['restore_records_per_s'])} / "
                f"{r[k]['restored_worker_rss_bytes'] / 2**20:.0f} / "
                f"{_n(full['restore_s_estimated'][k])} |"
                for k, label in (
                    ("faust_recovery", "Faust's own recovery"),
                    ("bulk_restore", "bulk restore (stream/engine/restore.py)"),
                )
                if k in r
            )
        )
    g = f.get("growth", {})
    if "points" in g:
        rows = "\n".join(
            f"| {p['receipts']:,} | {_n(p['segment_receipts_per_s'])} | "
            f"{p['segment_cpu_us_per_receipt']:.0f} | {p['rss_bytes'] / 2**20:.0f} | "
            f"{p['rocksdb_bytes'] / 1e6:.0f} |"
            for p in g["points"]
        )
        lines.append(
            "\nGrowth (one streaming replay; each row is the segment since the previous):\n\n"
            "| receipts | receipts/s | CPU µs/receipt | RSS MiB | RocksDB MB |\n"
            "|---:|---:|---:|---:|---:|\n"
            + rows
            + f"\n\nCPU cost per receipt, last segment / first: {g['cpu_cost_last_over_first']}"
        )
    return "\n".join(lines)


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


def target_rows(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets (issue 19) against one run's figures: one dict per target with
    ``figure``, ``target`` (text), ``value`` (None = not measured in this run), ``unit``,
    ``met`` (None = not measured) and ``detail``."""
    c, w, p, s = (f.get(k, {}) for k in ("core", "worker", "peer", "state"))
    one_steady = _get(w, "one_worker", "steady", "receipts_per_worker_cpu_s")
    two_steady = _get(w, "two_workers", "steady", "receipts_per_worker_cpu_s")
    faust_cpu = _get(p, "faust_worker", "receipts_per_worker_cpu_s")
    quix_cpu = _get(p, "quix", "receipts_per_worker_cpu_s")
    rss = _get(s, "full", "worker_rss_after_probe_bytes")
    rows = [
        (
            "one worker, receipts per worker CPU-second, steady",
            ">= 2000",
            one_steady,
            "receipts/CPU-s",
            lambda v: v >= 2000,
            f"drained backlog: {_n(_get(w, 'one_worker', 'receipts_per_worker_cpu_s'))}",
        ),
        (
            "replay core / fastavro decode + encode ceiling",
            ">= 0.20",
            _get(c, "ratio_core_to_decode_encode"),
            "",
            lambda v: v >= 0.20,
            f"per CPU-s {_get(c, 'ratio_core_to_decode_encode_cpu')}",
        ),
        (
            "Faust worker / like-for-like Quix peer, per CPU-second",
            ">= 1.5",
            _ratio(faust_cpu, quix_cpu),
            "",
            lambda v: v >= 1.5,
            f"{_n(faust_cpu)} / {_n(quix_cpu)} receipts per CPU-s; by wall clock "
            f"{_get(p, 'ratio_faust_to_quix')}",
        ),
        (
            "two workers' scaling efficiency (per worker CPU-s, two vs one, steady)",
            ">= 0.9",
            _ratio(two_steady, one_steady),
            "",
            lambda v: v >= 0.9,
            f"two workers {_n(two_steady)} per worker CPU-s; wall-clock two/one "
            f"{_get(w, 'ratio_two_to_one')} (the broker and both workers share 2 cores)",
        ),
        (
            "p99 purchase -> counter at 400/s, worker on its own core",
            "<= 100 ms",
            _get(w, "latency_400_own_core", "p99_ms"),
            "ms",
            lambda v: v <= 100,
            f"cores shared: p99 {_n(_get(w, 'latency_400', 'p99_ms'))} ms",
        ),
        (
            "worker RSS, national state incl. card history",
            "<= 1 GiB",
            round(rss / 2**20) if rss else None,
            "MiB",
            lambda v: v <= 1024,
            f"{_n(_get(s, 'full', 'cards'))} cards, after receipts",
        ),
    ]
    return [
        {
            "figure": name,
            "target": target,
            "value": value,
            "unit": unit,
            "met": None if value is None else bool(ok(value)),
            "detail": detail,
        }
        for name, target, value, unit, ok, detail in rows
    ]


def targets(f: dict[str, Any]) -> str:
    """The targets table (Markdown), as ``make bench`` prints it at the end."""
    lines = ["| figure | target | measured | | detail |", "|---|---|---:|---|---|"]
    for r in target_rows(f):
        value = "not measured" if r["value"] is None else f"{r['value']} {r['unit']}".strip()
        met = "—" if r["met"] is None else ("met" if r["met"] else "**missed**")
        lines.append(f"| {r['figure']} | {r['target']} | {value} | {met} | {r['detail']} |")
    return "\n".join(lines)


def _not_measured(what: str, fig: dict[str, Any]) -> str:
    return f"{what}: not measured in this run" + (f" ({fig['error'][:200]})" if fig else "")


def design(f: dict[str, Any]) -> str:
    """The design changes measured before and after in this run (benchmarks/design.py)."""
    d = f.get("design", {})
    if not d or "error" in d:
        return _not_measured("design changes", d)
    lines = [
        f"| change | figure | before | after | after / before (mean of {d['pairs']} "
        "interleaved pairs; min-max) |",
        "|---|---|---:|---:|---|",
    ]

    def line(change: str, figure: str, c: dict[str, Any], digits: int = 0) -> None:
        lines.append(
            f"| {change} | {figure} | {_n(c['before_mean'], digits)} | "
            f"{_n(c['after_mean'], digits)} | {c['ratio_mean']} ({c['ratio_min']}-"
            f"{c['ratio_max']}) |"
        )

    if "no_wal_core" in d:
        w = d["no_wal_core"]
        line(
            "no RocksDB write-ahead log",
            f"replay core, receipts per CPU-s ({w['receipts']:,} receipts)",
            w,
        )
    if "packed_internal" in d:
        pk = d["packed_internal"]
        n = f"{pk['receipts']:,}-receipt backlog"
        name = "packed internal records (identified receipts, contributions)"
        line(name, f"one worker, receipts per worker CPU-s, {n}", pk["drain"])
        line(name, "same, steady state", pk["steady"])
        line(name, "broker CPU-s per run", pk["broker_cpu_s"], 1)
        line(
            name,
            "records on `receipts.identified` and `aggregates.contributions`",
            pk["packed_topic_records"],
        )
    return "\n".join(lines)


def profile(f: dict[str, Any]) -> str:
    """The worker's py-spy profile of this run (benchmarks/profile_worker.py)."""
    p = f.get("profile", {})
    if not p or "error" in p:
        return _not_measured("profile", p)
    lines = [
        f"One worker draining a {p['receipts']:,}-receipt backlog ({p['seconds']} s, "
        f"{_n(p['receipts_per_worker_cpu_s'])} receipts per worker CPU-s; {p['samples']} "
        f"samples at {p['rate_hz']} Hz, {p['mode']}):\n",
        "| where | share |",
        "|---|---:|",
    ]
    for r in p["shares"]:
        name = r["class"]
        if name.startswith("stage code: "):
            name = "— " + name.removeprefix("stage code: ")
        lines.append(f"| {name} | {r['percent']:.1f} % |")
    return "\n".join(lines)


def main() -> int:
    data = json.loads(LATEST.read_text())
    f = data["figures"]
    print(
        f"Run of {data['started']}, `{data['command']}`, "
        f"load average at start {data['machine']['loadavg_at_start']}, "
        f"{data.get('total_seconds', '?')} s in all.\n"
    )
    print(figures(f))
    print("\n---PROFILE---\n")
    print(profile(f))
    print("\n---DESIGN CHANGES---\n")
    print(design(f))
    print("\n---TARGETS---\n")
    print(targets(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
