"""``python -m gateway run``: serve the gateway."""

from gateway.cli import main

if __name__ == "__main__":
    main()
