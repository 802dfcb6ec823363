"""What happened: every attempt, its tokens, cost and latency, and the quality evidence."""
