"""The whole topology: which stage reads which topics, in one place.

The Faust worker (``stream/engine/worker.py``) makes one agent and one state table per stage from
this list; the in-process driver (``stream/tools/replay.py``) feeds records to the same steps in
file order, passing each stage's emits to the stages that read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topologies import card_join, catalog, group_aggregates, household_bonus, personal_routing
from topologies.context import Context
from topologies.records import StepResult
from topologies.state import State

Step = Callable[[Context, State, str, "str | None", "dict[str, Any] | None"], StepResult]
# Time-driven work (sweeps, expiry) when the processing clock moves without a record
# (``replay --now``); steps also run it themselves as records advance the clock.
Tick = Callable[[Context, State], StepResult]


@dataclass(frozen=True)
class Stage:
    """A stage: its inputs, the step each record goes through, and its time-driven work."""

    name: str
    inputs: tuple[str, ...]
    step: Step
    # Global: every worker holds all partitions (the catalogue); otherwise the state is
    # partitioned like the inputs.
    is_global: bool = False
    tick: Tick | None = None


STAGES: tuple[Stage, ...] = (
    Stage(catalog.STAGE, catalog.INPUTS, catalog.step, is_global=True),
    Stage(card_join.STAGE, card_join.INPUTS, card_join.step, tick=card_join.tick),
    Stage(
        personal_routing.STAGE,
        personal_routing.INPUTS,
        personal_routing.step,
        tick=personal_routing.tick,
    ),
    Stage(
        group_aggregates.STAGE,
        group_aggregates.INPUTS,
        group_aggregates.step,
        tick=group_aggregates.tick,
    ),
    Stage(
        household_bonus.STAGE,
        household_bonus.INPUTS,
        household_bonus.step,
        tick=household_bonus.tick,
    ),
)

STAGE_BY_NAME = {s.name: s for s in STAGES}
STAGE_FOR_TOPIC: dict[str, Stage] = {t: s for s in STAGES for t in s.inputs}
# What the worker's consumer group reads and commits: every stage input except the global
# stage's (the catalogue is read whole by every worker, outside the group).
GROUP_INPUTS: tuple[str, ...] = tuple(t for s in STAGES if not s.is_global for t in s.inputs)
