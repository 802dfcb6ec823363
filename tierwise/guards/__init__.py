"""May a model be called now: rate limits, health (breaker), budget (money), daily quota."""
