"""Pricing: rate decks, the prefix index and the pure rating engine."""
