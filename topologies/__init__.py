"""Pure processing logic of purchase-stream: what happens to the data.

Nothing in this package imports Faust, Kafka, RocksDB or metrics. Each topology is a
function (or small class) over a :class:`topologies.state.State` and plain dict records.
"""
