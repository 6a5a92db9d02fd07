"""The ratekeeper process: settings, wiring, sessions, authorization servers, CLI."""
