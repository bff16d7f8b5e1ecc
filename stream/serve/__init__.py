"""Serving: the HTTP API, auth, the live feed and the read queries."""
