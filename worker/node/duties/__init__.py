"""The node's duties, one small module each, run in this order every tick by
:class:`~worker.node.node.Node`:

reconciler (every role)
    own job records against the chain: resume after a restart, redo what a reorg dropped;
provider, delivery (role provider)
    discover, check inputs, claim, compute; deliver receipts, finalize after the window;
verifier (role verifier)
    sample other providers' receipts, re-execute, challenge a mismatch;
committee, resolver (every role)
    draw, commit and reveal votes; resolve disputes after the reveal phase;
payout (every role)
    withdraw earnings and rewards.
"""

from worker.node.duties.base import Duty, Operator
from worker.node.duties.committee import Committee
from worker.node.duties.delivery import Delivery
from worker.node.duties.payout import Payout
from worker.node.duties.provider import Provider
from worker.node.duties.reconciler import Reconciler
from worker.node.duties.resolver import Resolver
from worker.node.duties.verifier import Verifier

__all__ = ["Committee", "Delivery", "Duty", "Operator", "Payout", "Provider", "Reconciler", "Resolver", "Verifier"]
