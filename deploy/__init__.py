"""The local devnet (Anvil, deployment, funded demo accounts), the process supervisor behind
``make up``, and the ``hearth`` CLI."""
