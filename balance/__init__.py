"""Money in real time: the SQL ledger and live state in Redis."""
