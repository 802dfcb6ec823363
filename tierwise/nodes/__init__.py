"""Cognitive-operation nodes: one module per operation (output schema + node factory)."""
