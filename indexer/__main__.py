"""``python -m indexer run|status|rebuild|migrate``."""

from indexer.cli import app

if __name__ == "__main__":
    app(prog_name="python -m indexer")
