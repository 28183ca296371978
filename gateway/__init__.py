"""The Accord node: FastAPI app (peer API, local API), delivery worker and CLI."""

__all__: list[str] = []
