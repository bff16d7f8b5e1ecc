"""The Faust adapter: the app, the agents, tables, state, output, liveness and metrics; every
use of a library's internals is fenced in patches.py."""
