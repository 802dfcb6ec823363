"""tierwise benchmarks: scripts that print their figures (medians, ratios to baselines)."""
