"""The health report, as public as the chain: whether the chain and the database answer, and the
deployment a wallet pays into (chain id, escrow, tokens). It reports; it does not fail (a broken
dependency is ``degraded``, not a 500).

It says no more than a wallet needs: no exception text (it can name hosts, paths, credentials in a
URL), no provider names or circuit states; the failure itself goes to the log."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.orm import Session
from web3 import Web3

from cardless.protocol.deployment import Deployment
from gateway.schemas import ChainHealth, DatabaseHealth, DeploymentOut, HealthOut

__all__ = ["check_health"]

log = logging.getLogger(__name__)


def check_health(
    session: Session,
    w3: Web3,
    deployment: Deployment,
    simulator_url: str | None,
    public_rpc_url: str | None = None,
    *,
    processes: Mapping[str, str] | None = None,
) -> HealthOut:
    try:
        chain = ChainHealth(ok=True, block=w3.eth.block_number)
    except Exception:  # reported, not raised
        log.warning("health: the chain does not answer", exc_info=True)
        chain = ChainHealth(ok=False)
    try:
        session.execute(text("SELECT 1"))
        database = DatabaseHealth(ok=True)
    except Exception:  # reported, not raised
        log.warning("health: the database does not answer", exc_info=True)
        database = DatabaseHealth(ok=False)
    children_ok = processes is None or all(state == "running" for state in processes.values())
    return HealthOut(
        status="ok" if chain.ok and database.ok and children_ok else "degraded",
        chain=chain,
        database=database,
        deployment=DeploymentOut.model_validate(
            {**deployment.model_dump(mode="json"), "rpc_url": public_rpc_url}
        ),
        simulator=simulator_url,
        processes=dict(processes) if processes is not None else None,
    )
