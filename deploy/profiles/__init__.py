"""The agreement profiles Accord ships (TOML), read as package data by `accord.policy`."""
