"""Offline tools: the replay driver, replay files and the topic viewer."""
