"""Graph state types and the graphs built from nodes."""
