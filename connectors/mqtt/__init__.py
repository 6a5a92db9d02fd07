"""MQTT publisher of rated calls and other events."""
