"""Everything that decides which model answers and calls it; knows nothing of graphs."""
