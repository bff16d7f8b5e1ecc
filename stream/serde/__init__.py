"""Serialization: the codec, Avro schemas, the compiled Avro path and the registry client."""
