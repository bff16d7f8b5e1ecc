"""Local infrastructure: the embedded broker, topic admin and the demo."""
