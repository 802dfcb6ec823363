"""How to reach a model and read its failures: clients, the embedded model, failure classes."""
