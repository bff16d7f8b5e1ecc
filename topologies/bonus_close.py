"""The month close: every open month whose close instant has come gets its statements.

Closing is driven by the processing clock: each step of the household Bonus stage (and its
``tick``) first closes every month that is due. The close of a month writes, per owed
household, the tally (``closed``), ``stmt|``, ``stated|``, then deletes its ``open|`` entry;
``meta|open_months`` is written after the whole month, so a cut-short close is redone for the
households still listed (a household already stated is only sent again).
"""

from __future__ import annotations

from topologies.bonus_ledger import (
    OPEN_MONTHS_KEY,
    Tally,
    issue,
    statement_emit,
    tally_emit,
    tally_key,
    write_open_months,
)
from topologies.bonus_rules import close_at
from topologies.context import Context
from topologies.records import StepResult
from topologies.state import State


def close_due_months(ctx: Context, state: State, result: StepResult) -> list[str]:
    """Close every open month whose close instant is at or before now; the months left open.

    The months are few (usually the current one, plus the previous one until the close day),
    so the list lives in one meta key and the check costs one get per record.
    """
    months: list[str] = list(state.get(OPEN_MONTHS_KEY) or [])
    closed = 0
    while months and close_at(ctx.rules, months[0]) <= ctx.now_ms:
        _close_month(ctx, state, months[0], result)
        months.pop(0)
        closed += 1
    if closed:
        # Written after the month's households, so a crash mid-close redoes the rest.
        write_open_months(state, months)
    return months


def _close_month(ctx: Context, state: State, month: str, result: StepResult) -> None:
    prefix = f"open|{month}|"
    for okey, _ in state.items(prefix):
        hh = okey[len(prefix) :]
        tkey = tally_key(hh, month)
        tally: Tally | None = state.get(tkey)
        if tally is not None:  # None: a crash cut the count before its tally write
            if not tally["closed"]:
                tally = {**tally, "closed": True, "updated_at": ctx.now_ms}
                state.set(tkey, tally)
            result.emits.append(tally_emit(tally))
            if not issue(ctx, state, tally, result):
                # Stated before a crash cut the close short: send again, issue nothing new.
                for _, statement in state.items(f"stmt|{hh}|{month}|"):
                    result.emits.append(statement_emit(statement))
        state.delete(okey)  # last: the entry is the "still to do" mark of this household
    result.events["month_closed"] += 1
