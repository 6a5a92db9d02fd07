"""Billing periods, invoices and taxes (to come)."""
