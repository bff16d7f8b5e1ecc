"""A person's consent: versioned updates and the "on without a break" rule (docs/domain.md §2-3).

For each flag we keep ``on_since``: the earliest ``effective_at`` among the accepted records
of the current unbroken run of records with the flag on (``None`` while it is off). A line
item purchased at ``t`` may enter the flag's store iff ``on_since is not None and
t >= on_since``. This is exactly "on in the consent in effect at the purchase time and on in
every accepted change since", in O(1) per flag and without keeping the whole history:

- the record in effect at ``t`` is the highest version with ``effective_at <= t``; if
  ``t >= on_since`` that record belongs to the current run (whose records have the highest
  versions), so it is on, and so is every later one;
- if ``t < on_since`` the record in effect at ``t`` (if any) precedes the run, so a later
  record switched the flag off (a break) or it was never on: not consented.

A record with a version not above the one held is ignored (out-of-order delivery,
redelivery). An unknown customer has every flag off (fail closed).

Versions order the records; ``effective_at`` need not follow them. A record that reopens a
flag with an ``effective_at`` *before* the latest break (a backdated reopening) must not
cover purchases made before that break: ``on_since`` is never earlier than the latest
``effective_at`` of a record that had the flag off (``off_at``). Privacy first: when the
sources disagree about time, the store stays closed.
"""

from __future__ import annotations

from typing import TypedDict

from topologies.record_types import Consent

# The consent flags, as named in the ``Consent`` record (avro/): the one place that names them.
PRODUCT_LEVEL_SERVICES = "product_level_services"  # product-level personal store, counters
MARKETING_TARGETING = "marketing_targeting"  # marketing signals (product groups)
EXTERNAL_AUDIENCES = "external_audiences"  # no store of ours
DIRECT_MARKETING = "direct_marketing"  # no store of ours
E_RECEIPTS = "e_receipts"  # the e-receipt archive
FLAGS = (
    PRODUCT_LEVEL_SERVICES,
    MARKETING_TARGETING,
    EXTERNAL_AUDIENCES,
    DIRECT_MARKETING,
    E_RECEIPTS,
)
# The flags that gate a store of the personal-routing stage (topologies/personal_stores.py).
GATED_FLAGS = (PRODUCT_LEVEL_SERVICES, MARKETING_TARGETING, E_RECEIPTS)

# Decision reasons: a bounded set, used as metric labels.
ALLOWED = "allowed"
CONSENT_OFF = "consent_off"
CONSENT_UNKNOWN = "consent_unknown"
CONSENT_LAPSED = "consent_lapsed"  # on now, but not without a break since the purchase


class ConsentState(TypedDict):
    """What the stage keeps of a person's consent (``consent|<customer>``)."""

    customer_id: str
    version: int
    effective_at: int
    source: str
    flags: dict[str, bool]
    on_since: dict[str, int | None]
    off_at: dict[str, int | None]


def key(customer_id: str) -> str:
    """State key of a person's consent."""
    return f"consent|{customer_id}"


def apply(held: ConsentState | None, record: Consent) -> tuple[ConsentState | None, list[str]]:
    """Apply a consent record to the held state.

    Returns ``(new_state, revoked_flags)``; ``new_state`` is ``None`` when the record is
    stale (version not above the held one) and must be ignored.
    """
    version = int(record["version"])
    effective_at = int(record["effective_at"])
    if held is not None and version <= held["version"]:
        return None, []
    held_flags: dict[str, bool] = held["flags"] if held else {}
    held_since: dict[str, int | None] = held["on_since"] if held else {}
    held_off: dict[str, int | None] = held.get("off_at", {}) if held else {}
    flags: dict[str, bool] = {}
    on_since: dict[str, int | None] = {}
    off_at: dict[str, int | None] = {}
    revoked: list[str] = []
    for flag in FLAGS:
        on = bool(record[flag])  # type: ignore[literal-required]
        flags[flag] = on
        since = held_since.get(flag)
        last_off = held_off.get(flag)
        if on:
            start = effective_at if since is None else min(since, effective_at)
            on_since[flag] = start if last_off is None else max(start, last_off)
            off_at[flag] = last_off
        else:
            on_since[flag] = None
            off_at[flag] = effective_at if last_off is None else max(last_off, effective_at)
            if held_flags.get(flag):
                revoked.append(flag)
    state: ConsentState = {
        "customer_id": record["customer_id"],
        "version": version,
        "effective_at": effective_at,
        "source": record.get("source", ""),
        "flags": flags,
        "on_since": on_since,
        "off_at": off_at,
    }
    return state, revoked


def decide(held: ConsentState | None, flag: str, purchased_at: int) -> str:
    """May a line item purchased at ``purchased_at`` enter the store gated by ``flag``?"""
    if held is None:
        return CONSENT_UNKNOWN
    since = held["on_since"].get(flag)
    if since is None:
        return CONSENT_OFF
    if purchased_at < since:
        return CONSENT_LAPSED
    return ALLOWED
