"""The embedded development chain: py-evm served over JSON-RPC, the dev deployment, dev accounts.

Used by the CLI's embedded mode, the tests and the benches; no production module imports it.
"""
