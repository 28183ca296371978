"""A running node: its context, configuration, TLS and group commit."""
