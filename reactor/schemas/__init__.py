"""JSON Schemas for rules and config files (``*.schema.json``), and :mod:`.generate` that writes them."""
