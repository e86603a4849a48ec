"""``python -m deploy devnet|up``: the devnet alone, or the whole stack."""

from deploy.cli import main

if __name__ == "__main__":
    main(prog_name="python -m deploy")
