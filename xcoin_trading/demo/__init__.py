"""`xcoin demo`: one package for every step of the end-to-end demo (run.py drives them in order)."""

from xcoin_trading.demo.accounts import DEMO_STRATEGIES, DEMO_USERS
from xcoin_trading.demo.run import run_demo

__all__ = ["DEMO_STRATEGIES", "DEMO_USERS", "run_demo"]
