"""Plain service functions used by the API, the CLI and Dagster. Each takes a Session (the caller
owns the transaction) and the acting user's id, and checks the actor owns what it touches."""
