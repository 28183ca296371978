"""The node's two HTTP faces: routers and request/response models only."""
