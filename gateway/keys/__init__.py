"""The node's keys: the encrypted key store, rotation and revocation, key upkeep."""
