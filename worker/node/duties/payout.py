"""The payout duty: withdraws what the market credits this node (job earnings in the payment
token, dispute rewards in the stake token) every ``withdraw_interval_s``, or at once on the last
tick of a ``--once`` run. Pull payments: nothing reaches the operator's wallet until it asks."""

from __future__ import annotations

import math
import time

from contracts.errors import ChainError
from worker.node.duties.base import Duty, Operator, kv
from worker.node.sources import tx_hex
from worker.node.view import TickContext


class Payout(Duty):
    """Withdraw earnings and rewards on a schedule (see the module docstring)."""

    name = "payout"

    def __init__(self, op: Operator) -> None:
        super().__init__(op)
        self._last = -math.inf

    def run(self, ctx: TickContext) -> None:
        op = self.op
        wall = time.monotonic()
        if not ctx.final and wall - self._last < op.config.withdraw_interval_s:
            return
        market = op.h.market.functions
        rewards = int(market.rewardOf(op.address).call())
        if rewards:
            try:
                rcpt = op.sender.send(market.withdrawRewards(op.address))
                self.log.info("withdrew dispute rewards %s",
                              kv(amount=rewards, token="stake", block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
                              extra={"block": rcpt["blockNumber"], "tx": tx_hex(rcpt)})
            except ChainError as exc:
                self.log.warning("withdrawRewards failed: %s", exc)
        balance = int(market.balanceOf(op.address).call())
        if balance < max(1, op.config.min_withdraw):
            return
        try:
            rcpt = op.sender.send(market.withdraw(op.address))
        except ChainError as exc:
            self.log.warning("withdraw failed: %s", exc)
            return
        self._last = wall
        ctx.report.withdrawn = balance
        self.log.info("withdrew %s", kv(amount=balance, block=rcpt["blockNumber"], tx=tx_hex(rcpt)),
                      extra={"block": rcpt["blockNumber"], "tx": tx_hex(rcpt)})
