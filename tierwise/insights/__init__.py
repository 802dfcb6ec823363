"""The ledger read for people: statistics, A/B reports, recommendations, the HTML report."""
