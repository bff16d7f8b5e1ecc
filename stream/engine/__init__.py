"""The Faust adapter: the app, the agents, tables, state, output, liveness and metrics."""
