"""Pure processing logic of purchase-stream: what happens to the data.

Nothing in this package imports Faust, Kafka, RocksDB or metrics. Each topology is a
function (or small class) over a :class:`topologies.state.State` and plain dict records,
typed in :mod:`topologies.record_types`. :mod:`topologies.pipeline` lists the stages:

- ``catalog`` (:mod:`topologies.catalog`): the product catalogue, read whole by every worker;
- ``card_join`` (:mod:`topologies.card_join`, :mod:`topologies.card_register`): each receipt
  joined with the card link that held at its purchase time;
- ``personal_routing`` (:mod:`topologies.personal_routing`): consent-gated routing by purpose;
  its stores (:mod:`topologies.personal_stores`), retention
  (:mod:`topologies.personal_retention`), revocation and erasure
  (:mod:`topologies.personal_erasure`), product recalls (:mod:`topologies.recall`) and the
  S-mobiili counters (:mod:`topologies.counters`);
- ``group_aggregates`` (:mod:`topologies.group_aggregates`): anonymous store-day sums;
- ``household_bonus`` (:mod:`topologies.household_bonus`): the Bonus arithmetic
  (:mod:`topologies.bonus_rules`), the ledger (:mod:`topologies.bonus_ledger`), the month
  close (:mod:`topologies.bonus_close`) and the sweeps (:mod:`topologies.bonus_sweeps`).

The read queries over the stages' state are in :mod:`topologies.queries`; who may see what
in :mod:`topologies.access`.
"""
