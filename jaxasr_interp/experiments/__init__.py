"""The paper's experiments end to end, one module each (data -> sweep -> table + plot)."""
