"""FreeSWITCH Event Socket: parser -> reconnecting client -> translator to events."""
