"""Administration of a node's home: creating it, peers, users, the keys' listing."""
