"""Cardless: the packages below the four top-level folders.

- :mod:`cardless.protocol` — encodings, typed ids, artifacts, the deployment model (no I/O, no database)
- :mod:`cardless.ledger` — the database: models, migrations, transitions, the order store, the cipher
- :mod:`cardless.devchain` — the embedded py-evm node and dev deployment (CLI, tests, benches only)
- :mod:`cardless.cli` — settings, wiring and the ``cardless`` command

Imports run one way (docs/architecture.md): protocol <- ledger <- {oracles, gateway} <- cli.
"""
