"""CoinDCX: REST client, market metadata and the compatible simulator."""
