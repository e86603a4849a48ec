"""What the services share that is not the protocol's definition: blob stores, database
helpers, the settings base class, the logging setup, devnet key loading and the torch-free
billing tokenizer. It sits beside :mod:`contracts` in the lowest layer (see the README,
"Layers") and may import it; ``indexer``, ``worker`` and ``gateway`` import both, never each other.
"""
