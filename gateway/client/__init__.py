"""Clients of a node's local API, used by the CLI and the demo."""
