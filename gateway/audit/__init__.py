"""The audit log: events, checkpoints, witnessing by peers, evidence bundles."""
