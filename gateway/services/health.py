"""The health report: chain, database and each provider's circuit breaker. It reports; it does not
fail (a broken dependency is ``degraded``, not a 500)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.orm import Session
from web3 import Web3

from adapters import ProviderAdapter
from cardless.protocol.deployment import Deployment
from gateway.schemas import ChainHealth, DatabaseHealth, DeploymentOut, HealthOut, ProviderHealth

__all__ = ["check_health"]


def check_health(
    session: Session,
    w3: Web3,
    adapters: Mapping[str, ProviderAdapter],
    deployment: Deployment,
    simulator_url: str | None,
) -> HealthOut:
    try:
        chain = ChainHealth(ok=True, block=w3.eth.block_number)
    except Exception as exc:  # reported, not raised
        chain = ChainHealth(ok=False, error=str(exc))
    try:
        session.execute(text("SELECT 1"))
        database = DatabaseHealth(ok=True)
    except Exception as exc:  # reported, not raised
        database = DatabaseHealth(ok=False, error=str(exc))
    providers = {
        name: ProviderHealth.model_validate(dataclasses.asdict(adapter.health()))
        for name, adapter in adapters.items()
    }
    return HealthOut(
        status="ok" if chain.ok and database.ok else "degraded",
        chain=chain,
        database=database,
        providers=providers,
        deployment=DeploymentOut.model_validate(deployment.model_dump(mode="json")),
        simulator=simulator_url,
    )
