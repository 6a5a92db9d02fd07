"""Switch and bus connectors: protocol parsers, reconnecting clients, translators to events."""
