"""Research: parameter sweeps with a held-out part, and walk-forward optimisation (a partition per window)."""
