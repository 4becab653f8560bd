"""The REST API of the seeds (FastAPI): thin routes over `xcoin_trading.services`."""

from xcoin_trading.api.app import create_app

__all__ = ["create_app"]
