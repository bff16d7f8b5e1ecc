"""Runtime of purchase-stream: how data moves (Faust app, codecs, broker, CLI)."""
