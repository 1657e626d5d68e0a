"""One oracle worker in a thread of its own, with its own event loop, adapter instances and scheduler.

No web framework and no simulator here (import-linter and tests/cli/test_oracle_imports.py check it):
``cardless oracle`` imports this module, ``oracles`` and the adapters it is configured with, nothing
of the gateway's serving stack.

``build_worker`` and ``_oracle_main`` moved here from ``System``; the jobs and the merchant sweep live in
:mod:`oracles.service` and :mod:`oracles.settlement`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta

import httpx
from prometheus_client import start_http_server
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract

from adapters import ProviderAdapter
from cardless.cli.keys import Keys, cosigner_secret
from cardless.cli.settings import Settings
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.risk import RiskEngine, ScreeningList
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.reverts import RevertDecoder
from gateway.catalogue import Catalogue
from oracles.proofs import HttpCoSigner
from oracles.risk import RiskPolicy
from oracles.service import OracleService
from oracles.settlement import MerchantSweep
from oracles.txmanager import TxManager
from oracles.webhooks import DeliveryPolicy, WebhookSender
from oracles.worker import OracleWorker, WorkerConfig

__all__ = ["AdapterFactory", "OracleRunner"]

log = logging.getLogger("cardless")

AdapterFactory = Callable[[list[httpx.AsyncClient]], Mapping[str, ProviderAdapter]]
"""Builds the worker's adapters on the oracle's own loop, registering their clients for closing."""


class OracleRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        w3: Web3,
        sessions: sessionmaker[Session],
        deployment: Deployment,
        keys: Keys,
        cipher: AccountCipher,
        catalogue: Catalogue,
        adapters: AdapterFactory,
        callback_base: str | None,
    ) -> None:
        self.settings = settings
        self.w3 = w3
        self.sessions = sessions
        self.deployment = deployment
        self.keys = keys
        self.cipher = cipher
        self.catalogue = catalogue
        self._adapters = adapters
        self.callback_base = callback_base
        self.worker: OracleWorker | None = None
        self._thread: threading.Thread | None = None
        self._oracle_loop: asyncio.AbstractEventLoop | None = None
        self._oracle_stop: asyncio.Event | None = None

    def escrow(self) -> Contract:
        return self.w3.eth.contract(address=self.deployment.escrow, abi=load_artifact("CardlessEscrow").abi)

    def start(self, timeout: float = 30) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._oracle_loop = loop
            try:
                loop.run_until_complete(self._oracle_main(ready))
            except BaseException as exc:  # surfaced to start() or logged
                errors.append(exc)
                ready.set()
                log.exception("oracle stopped")
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="oracle", daemon=True)
        thread.start()
        self._thread = thread
        ready.wait(timeout)
        if errors:
            raise RuntimeError(f"oracle failed to start: {errors[0]}") from errors[0]

    def stop(self) -> None:
        if self._oracle_loop is not None and self._oracle_stop is not None:
            self._oracle_loop.call_soon_threadsafe(self._oracle_stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- moved from System as a block ------------------------------------------------------------

    def build_worker(self, clients: list[httpx.AsyncClient]) -> OracleWorker:
        settings = self.settings
        adapters = dict(self._adapters(clients))
        escrow = self.escrow()
        decoder = RevertDecoder([load_artifact("CardlessEscrow").abi])
        profile = settings.chain_profile(self.deployment.chain_id)
        log.info(
            "chain %d (%s): %d confirmations, finality %s, eth_getLogs %d blocks, %s fees",
            profile.chain_id,
            profile.name,
            profile.confirmations,
            profile.finality,
            profile.max_log_range,
            profile.fee_mode,
        )
        tx = TxManager(
            self.w3,
            self.sessions,
            self.keys.require("gas"),
            decoder,
            bump_after=timedelta(seconds=profile.bump_after_seconds),
            confirmations=profile.confirmations,
            fee_mode=profile.fee_mode,
            low_balance_wei=profile.low_balance_wei,
        )
        return OracleWorker(
            w3=self.w3,
            escrow=escrow,
            domain=self.deployment.domain,
            sessions=self.sessions,
            adapters=adapters,
            proof_key=self.keys.require("oracle"),
            tx=tx,
            cipher=self.cipher,
            start_block=self.deployment.deployed_block,
            risk=RiskPolicy(
                engine=RiskEngine(
                    defaults=settings.default_risk_rules,
                    cipher=self.cipher,
                    screening=ScreeningList(settings.risk_screening_file)
                    if settings.risk_screening_file
                    else None,
                ),
                signal_retention=timedelta(days=settings.risk_signal_retention_days),
            ),
            config=WorkerConfig(
                max_batch=settings.max_batch,
                submit_concurrency=settings.provider_concurrency,
                confirmations=profile.confirmations,
                finality=profile.finality,
                max_log_range=profile.max_log_range,
                not_found_grace=timedelta(seconds=settings.not_found_grace_seconds),
                query_backoff=timedelta(seconds=settings.query_backoff_seconds),
                unpaid_retention=settings.unpaid_retention_seconds,
                heads_url=self._heads_url(),
            ),
            callback_base=self.callback_base,
            cosigners=self._cosigners(),
        )

    def _heads_url(self) -> str:
        """Where the worker subscribes to new blocks: ``CARDLESS_CHAIN_WS_URL``, else the node's own URL
        with ws:// for http:// ("off": none, the worker polls)."""
        configured = self.settings.chain_ws_url
        if configured:
            return "" if configured == "off" else configured
        uri = str(getattr(self.w3.provider, "endpoint_uri", "") or "")
        for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
            if uri.startswith(plain):
                return secure + uri[len(plain) :]
        return ""

    def _cosigners(self) -> list[HttpCoSigner]:
        """The co-signers (``CARDLESS_COSIGNER_URLS``) the settlement stage asks while the escrow's
        threshold wants more signatures than the oracle's own."""
        settings = self.settings
        if not settings.cosigner_urls:
            return []
        secret = cosigner_secret(settings)
        found = [
            HttpCoSigner(
                url, secret, self.sessions, self.deployment.domain, timeout=settings.cosigner_timeout_seconds
            )
            for url in settings.cosigner_urls
        ]
        log.info("co-signers: %s", ", ".join(settings.cosigner_urls))
        return found

    def _merchant_addresses(self) -> list[str]:
        """Every merchant in the database (disabled ones too: their balances are still theirs), else the
        catalogue file's, as of start-up."""
        from sqlalchemy import select

        from cardless.ledger.models import Merchant

        assert self.catalogue is not None
        with self.sessions() as session:
            stored = list(session.scalars(select(Merchant.address).order_by(Merchant.id)))
        return stored or [m.address for m in self.catalogue.merchants]

    async def _oracle_main(self, ready: threading.Event) -> None:
        clients: list[httpx.AsyncClient] = []
        metrics_server = None
        try:
            if self.settings.metrics_port is not None:
                metrics_server, _ = start_http_server(
                    self.settings.metrics_port, addr=self.settings.metrics_host
                )
            worker = self.build_worker(clients)
            self.worker = worker
            self._oracle_stop = asyncio.Event()
            assert self.catalogue is not None and self.deployment is not None
            sweep = MerchantSweep(
                worker.escrow,
                worker.tx,
                merchants=self._merchant_addresses(),
                tokens=[t.address for t in self.deployment.tokens],
            )
            # The pipeline runs in a tight loop (latency); OracleService runs the periodic jobs
            # (re-query, expiry and refunds, the merchant sweep) on APScheduler in this event loop.
            webhooks = WebhookSender(
                self.sessions,
                self.cipher,
                DeliveryPolicy(
                    timeout=self.settings.webhook_timeout_seconds,
                    retry_base=timedelta(seconds=self.settings.webhook_retry_base_seconds),
                    allow_private=self.settings.is_development,
                ),
                owner=worker.worker_id,
            )
            if self.settings.oracle_metrics_port is not None:
                from cardless.cli.provider_metrics import PROVIDER_REGISTRY

                start_http_server(
                    self.settings.oracle_metrics_port, self.settings.gateway_host, registry=PROVIDER_REGISTRY
                )
            await OracleService(
                worker, sweep=sweep, gas_balance=worker.tx.check_balance, webhooks=webhooks.deliver_due
            ).run(self._oracle_stop, started=ready.set)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            for client in clients:
                await client.aclose()
