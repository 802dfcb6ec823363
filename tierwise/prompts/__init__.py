"""Prompt templates, one module per operation."""
