"""Cardless: the packages below the four top-level folders.

- :mod:`cardless.protocol` — encodings, typed ids, artifacts, the deployment model (no I/O, no database)
- :mod:`cardless.ledger` — the database: models, migrations, transitions, the order store, the cipher
- :mod:`cardless.devchain` — the embedded py-evm node and dev deployment (CLI, tests, benches only)
- :mod:`cardless.cli` — settings, wiring and the ``cardless`` command

Imports run one way (docs/architecture.md): protocol <- ledger <- {oracles, gateway} <- cli.
"""

import importlib.util as _importlib_util
import os as _os

# eth-hash takes the first installed backend, pycryptodome, unless ETH_HASH_BACKEND names one: 13 µs a
# keccak through cffi, against 1.7 µs for safe-pysha3's C code (pinned). py-evm's tries, web3's
# checksums and every EIP-712 digest hash through it: 1.5 ms of the dev node's 17 ms per `pay`
# (docs/benchmarks.md). Set before any hash is taken (the backend is chosen at the first one); an
# explicit choice in the environment wins.
if _importlib_util.find_spec("sha3") is not None:
    _os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
