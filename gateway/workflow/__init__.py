"""The agreement's request workflow (art. 4 to 6) as recorded by a node."""
