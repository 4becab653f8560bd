"""API request and response bodies, one module per API area; shared types in `base`."""
