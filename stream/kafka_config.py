"""How every Kafka client of the project connects: TLS and SASL, built in this one place.

The project makes two kinds of clients: Faust's (aiokafka) consumer and producer in the worker,
and confluent-kafka (librdkafka) producers, consumers and admin clients everywhere else
(outputs, catalogue and live feeds, restore, POS, recall, admin helpers, ``inspect``,
benchmarks). Both take their security from :class:`KafkaSecurity`, made from the settings
(``kafka_security_protocol``, ``kafka_sasl_*``, ``kafka_ssl_*``):

- :func:`client_config` is the librdkafka configuration every confluent-kafka client is built
  from (``security.protocol``, ``sasl.*``, ``ssl.*.location``); :func:`producer_config` adds
  the producer settings every producer shares (idempotent, acks=all, murmur2 partitioning);
- :meth:`KafkaSecurity.faust_credentials` is what ``faust.App(broker_credentials=...)`` takes
  (faust.auth.SSLCredentials / SASLCredentials, which faust turns into aiokafka's
  ``security_protocol``, ``sasl_*`` and ``ssl_context`` in
  ``faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth``).

The settings are read once at the edge (CLI command, worker start), which calls
:func:`configure`; the clients made afterwards in that process use it. Helpers keep taking a
bootstrap string, so a new client needs no new parameter to connect securely -- it only has to
be built from :func:`client_config` (tests/unit/test_kafka_config.py checks every constructor).
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from stream.settings import Settings


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = field(default_factory=lambda: SecretStr(""))
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    key_password: SecretStr = field(default_factory=lambda: SecretStr(""))

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ca_file=settings.kafka_ssl_ca_file,
            cert_file=settings.kafka_ssl_cert_file,
            key_file=settings.kafka_ssl_key_file,
            key_password=settings.kafka_ssl_key_password,
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def librdkafka(self) -> dict[str, Any]:
        """librdkafka properties (confluent-kafka); PLAINTEXT adds only the protocol."""
        config: dict[str, Any] = {"security.protocol": self.protocol}
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.uses_tls:
            if self.ca_file:
                config["ssl.ca.location"] = self.ca_file
            if self.cert_file:
                config["ssl.certificate.location"] = self.cert_file
                config["ssl.key.location"] = self.key_file
                if self.key_password.get_secret_value():
                    config["ssl.key.password"] = self.key_password.get_secret_value()
        return config

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of Faust's aiokafka clients: verifies the broker's certificate and
        host name against ``ca_file`` (or the system's CAs) and presents the client pair."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(
                self.cert_file,
                self.key_file,
                password=self.key_password.get_secret_value() or None,
            )
        return context

    def faust_credentials(self) -> CredentialsT | None:
        """``faust.App(broker_credentials=...)``; None = PLAINTEXT (Faust's default)."""
        from faust.auth import SASLCredentials, SSLCredentials

        context = self.ssl_context()
        if self.uses_sasl:
            # SASLCredentials picks SASL_SSL when given a context, SASL_PLAINTEXT otherwise.
            return SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        if context is not None:
            return SSLCredentials(context)
        return None


_lock = threading.Lock()
_security = KafkaSecurity()


def configure(settings: Settings) -> KafkaSecurity:
    """Use the security of ``settings`` for every Kafka client made from now on."""
    global _security
    security = KafkaSecurity.from_settings(settings)
    with _lock:
        _security = security
    return security


def security() -> KafkaSecurity:
    return _security


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The librdkafka configuration of a confluent-kafka client: ``bootstrap.servers``, the
    caller's ``extra`` properties, and the configured security (which ``extra`` cannot weaken)."""
    return {"bootstrap.servers": bootstrap, **extra, **_security.librdkafka()}


# librdkafka logs to stderr unless a client has a logger; the producers share this one.
_PRODUCER_LOG = logging.getLogger("stream.kafka_config.producer.librdkafka")


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka producer's settings: idempotent, ``acks=all`` and the Java client's
    murmur2 partitioner (the key -> partition mapping aiokafka and Kafka Streams use), with the
    security of :func:`client_config`; ``overrides`` use librdkafka names (``client.id``
    names the producer: the POS gateway, an output, a tool)."""
    config: dict[str, Any] = {
        "client.id": "pos-gateway",
        "enable.idempotence": True,
        "acks": "all",
        # same key -> partition mapping as the Java client and aiokafka
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "none",
        "queue.buffering.max.messages": 200_000,
        "message.timeout.ms": 60_000,
        "logger": _PRODUCER_LOG,
    }
    config.update(overrides)
    return client_config(bootstrap, **config)
