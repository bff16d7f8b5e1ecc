"""Session-wide test settings: the hypothesis profiles and the chaos scale.

``make test`` runs every test at its short scale: a few hundred fuzz examples per input topic
and the short fault schedule. ``make chaos`` sets ``PURCHASE_STREAM_CHAOS=full``, which selects
the ``chaos`` hypothesis profile (10,000 examples per input topic) and the long schedule.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CHAOS_FULL = os.environ.get("PURCHASE_STREAM_CHAOS", "").strip().lower() == "full"

# make test draws the same examples on every run (derandomized), so a CI result is
# reproducible; make chaos draws fresh ones each time to keep exploring.
# No deadline: a 2-core CI machine shared with a broker makes per-example timing meaningless.
_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "derandomize": not CHAOS_FULL,
    "print_blob": True,
}
settings.register_profile("default", max_examples=250, **_common)
settings.register_profile("chaos", max_examples=10_000, **_common)
settings.load_profile("chaos" if CHAOS_FULL else "default")
