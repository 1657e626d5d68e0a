"""The simulated top-up provider: a real HTTP server with accounts, balances, idempotency by our key,
signed callbacks and injectable faults. Its API is docs/design/simulator-api.md.

Cardless itself reaches it only through the generic HTTP adapter; this package is the provider's side.
"""

from adapters.simulator.app import create_app
from adapters.simulator.config import MerchantConfig, SimulatorConfig, SkuConfig, default_config, load_config
from adapters.simulator.server import SimulatorServer

__all__ = [
    "MerchantConfig",
    "SimulatorConfig",
    "SimulatorServer",
    "SkuConfig",
    "create_app",
    "default_config",
    "load_config",
]
