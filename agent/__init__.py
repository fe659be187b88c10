"""Plumb's node agent: pulls its node's signed plan, converges the host, reports back.

It also owns the plan and report contract (`agent.contract`) and the signing and sealing
helpers (`agent.crypto`) that the reconciler imports; the agent never imports the reconciler.
"""

__version__ = "0.1.0"
