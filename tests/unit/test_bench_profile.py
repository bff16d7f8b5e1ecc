"""The classes of the worker profile ``make bench`` prints (benchmarks/profile_worker.py)."""

from __future__ import annotations

from benchmarks.profile_worker import classify, shares

ROOT = (
    "thread (1): MainThread;<module> (stream/cli/__main__.py:7);"
    "run_worker (stream/engine/worker.py:149);"
    "Worker.execute_from_commandline (mode/worker.py:264)"
)
AGENT = ROOT + ";Agent._execute_actor (faust/agents/agent.py:698)"
RUN = AGENT + ";bind_agent.<locals>._run (stream/engine/agents.py:230)"
PROCESS = RUN + ";Runner.process (stream/engine/runner.py:120)"


def test_each_sample_goes_to_one_class_by_its_deepest_known_frame() -> None:
    raw = [
        # a state write inside a step: the state (deepest) decides, not the step
        f"{PROCESS};step (topologies/card_join.py:40);TableState.set (stream/engine/state.py:90) 5",
        # the state write's changelog send is deeper still
        f"{PROCESS};TableState.set (stream/engine/state.py:90);"
        "Output.send (stream/engine/output.py:60) 2",
        f"{PROCESS};step (topologies/card_join.py:40) 3",
        f"{PROCESS};Runner._step (stream/engine/runner.py:150) 1",
        f"{PROCESS};Codec.decode (stream/serde/codec.py:10) 4",
        f"{PROCESS};Counter.inc (prometheus_client/metrics.py:300) 1",
        # the agent's own loop, below Faust's take_events: Faust
        f"{AGENT};Stream.take_events (faust/streams.py:400) 6",
        f"{RUN};Output.send (stream/engine/output.py:60) 2",
        f"{ROOT};Loop.run (asyncio/base_events.py:600) 1",
        "thread (2): Thread-1;ServiceThread._start_thread (mode/threads.py:211) 3",
        "thread (3): catalog-feed;RestingReader.poll (stream/local/clients.py:132) 1",
        "thread (4): uvloop_0;_worker (concurrent/futures/thread.py:81) 1",
    ]
    c = classify(raw)
    assert c["stage code"] == 5 + 2 + 3 + 1 + 4 + 1
    assert c["stage code: state: RocksDB gets and puts, JSON values"] == 5
    assert c["stage code: changelog sends of state writes"] == 2
    assert c["stage code: the topology steps' own logic"] == 3
    assert c["stage code: the runner's own work"] == 1
    assert c["stage code: Avro (compiled codec)"] == 4
    assert c["stage code: metrics"] == 1
    assert c["Faust's and mode's stream machinery"] == 6
    assert c["the adapter: batch loop, output sends, delivery reports, serving, observability"] == 2
    assert c["event loop and the rest of the main thread"] == 1
    assert c["aiokafka's consumer thread"] == 3
    assert c["catalogue and live-feed threads"] == 1
    assert c["other threads"] == 1
    # The stage code's parts are inside its share, not added to the total a second time.
    table = {name: pct for name, _n, pct in shares(c)}
    assert abs(sum(p for k, p in table.items() if not k.startswith("stage code: ")) - 100) < 1e-9
    assert table["stage code"] == 100 * 16 / 30


def test_the_report_shows_the_stage_parts_inside_the_stage_share() -> None:
    from benchmarks.report import profile

    fig = {
        "receipts": 100,
        "seconds": 1.0,
        "receipts_per_worker_cpu_s": 1000.0,
        "samples": 10,
        "rate_hz": 50,
        "mode": "py-spy --gil",
        "shares": [
            {"class": "stage code", "samples": 6, "percent": 60.0},
            {"class": "stage code: metrics", "samples": 1, "percent": 10.0},
            {"class": "aiokafka's consumer thread", "samples": 4, "percent": 40.0},
        ],
    }
    table = profile({"profile": fig})
    assert "| stage code | 60.0 % |\n| — metrics | 10.0 % |" in table
    assert profile({}).startswith("profile: not measured")
