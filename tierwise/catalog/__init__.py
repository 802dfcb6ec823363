"""What exists: tiers, operations, model specs and prices, policies, settings."""
