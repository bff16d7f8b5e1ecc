"""Is a Kafka cluster there? A free local port, and a bootstrap list that accepts TCP and
answers a Kafka metadata request (with the cluster's TLS/SASL settings). Used by the embedded
broker, ``purchase-stream broker`` and the tests."""

from __future__ import annotations

import logging
import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip()
        for prefix in ("kafka://", "PLAINTEXT://", "plaintext://", "tcp://"):
            item = item.removeprefix(prefix)
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bootstrap server {item!r} is not host:port")
        servers.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not servers:
        raise ValueError(f"no bootstrap servers in {bootstrap!r}")
    return servers


def port_open_at(host: str, port: int, timeout: float) -> bool:
    """True if ``host:port`` accepts a TCP connection within ``timeout`` s."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.05)):
            return True
    except OSError:
        return False


def _quiet_logger() -> logging.Logger:
    # librdkafka logs connection failures to stderr unless given a logger.
    return logging.getLogger("stream.local.broker.librdkafka")


def metadata_ok(bootstrap: str, timeout: float) -> bool:
    """True if ``bootstrap`` answers a Kafka metadata request within ``timeout`` s."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from stream.kafka_config import client_config

    admin = AdminClient(
        client_config(  # a secured cluster answers metadata only over TLS/SASL
            bootstrap,
            **{
                "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
                "log.connection.close": False,
            },
        ),
        logger=_quiet_logger(),
    )
    try:
        admin.list_topics(timeout=max(timeout, 0.1))
    except KafkaException:
        return False
    return True


def is_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if some bootstrap server accepts TCP and answers a Kafka metadata request."""
    deadline = time.monotonic() + timeout
    for host, port in _split_bootstrap(bootstrap):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if port_open_at(host, port, left):
            left = deadline - time.monotonic()
            return left > 0 and metadata_ok(bootstrap, left)
    return False
