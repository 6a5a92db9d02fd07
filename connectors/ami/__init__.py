"""Asterisk Manager Interface: parser -> reconnecting client -> translator to events."""
