"""Read queries over the stages' state, for the CLI and the HTTP API (``stream/serve/reads.py``).

Nothing here writes: each function reads one stage's state (a :class:`topologies.state.State`
of that stage, which the readers open read-only) and returns plain JSON-ready values.
Identifiers containing ``|`` (the key separator) find nothing. One module per stage:
:mod:`topologies.queries.personal` (stage 2, keyed by customer) and
:mod:`topologies.queries.household_bonus` (stage 4, keyed by household).
"""
