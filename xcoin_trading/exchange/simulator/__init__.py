"""A CoinDCX-compatible exchange on 127.0.0.1: same paths, signing, JSON shapes and errors."""

from xcoin_trading.exchange.simulator.engine import Exchange, SimConfig
from xcoin_trading.exchange.simulator.faults import FaultRule, parse_fault_spec
from xcoin_trading.exchange.simulator.server import SimulatorAdmin, SimulatorProcess, SimulatorServer

__all__ = [
    "Exchange",
    "FaultRule",
    "SimConfig",
    "SimulatorAdmin",
    "SimulatorProcess",
    "SimulatorServer",
    "parse_fault_spec",
]
