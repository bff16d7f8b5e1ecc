"""The whole topology: which stage reads which topics, in one place.

The Faust worker (``stream/engine/app.py``) makes one agent and one state table per stage from this
list, except the global ``catalog`` stage, which every worker reads whole outside the group
(``stream/engine/catalog_feed.py``); the in-process driver (``stream/tools/replay.py``) feeds
records to the same steps in file order, passing each stage's emits to the stages that read them.
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
class StateGauge:
    """A figure of a stage's state the worker exports per partition (a metric gauge).

    ``read`` is called after a step only when it reported one of the ``changed_by`` events
    (``StepResult.events``), so other records cost no extra state read. ``metric`` names the
    gauge in the worker's metrics (``stream.engine.metrics.Metrics.state_gauges``).
    """

    metric: str
    read: Callable[[State], int]
    changed_by: frozenset[str]


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
    gauge: StateGauge | None = None
    # Inputs whose records' outputs to a packed topic may wait for the end of the batch and
    # go as one record per key (stream/engine/packing.py): only inputs that regenerate those
    # outputs whole if the worker dies before they are sent.
    packs_from: frozenset[str] = frozenset()


STAGES: tuple[Stage, ...] = (
    Stage(catalog.STAGE, catalog.INPUTS, catalog.step, is_global=True),
    Stage(
        card_join.STAGE,
        card_join.INPUTS,
        card_join.step,
        tick=card_join.tick,
        # A receipt's identified record and its contribution are the receipt's alone (and
        # the card state it read, which only a later record of this partition changes).
        # Not customer.cards: a card record deletes the parking entries of the receipts it
        # releases.
        packs_from=frozenset({"pos.receipts"}),
    ),
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
        # The dedupe state's size: only these events change it.
        gauge=StateGauge(
            "bonus_dedupe", household_bonus.seen_count, frozenset({"counted", "dedupe_expired"})
        ),
    ),
)

STAGE_BY_NAME = {s.name: s for s in STAGES}
STAGE_FOR_TOPIC: dict[str, Stage] = {t: s for s in STAGES for t in s.inputs}
# What the worker's consumer group reads and commits: every stage input except the global
# stage's (the catalogue is read whole by every worker, outside the group).
GROUP_INPUTS: tuple[str, ...] = tuple(t for s in STAGES if not s.is_global for t in s.inputs)
