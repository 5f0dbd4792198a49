"""Recovering a print that died: the prelude (pure), the records, the index, the service."""
