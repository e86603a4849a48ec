"""``python -m worker``: the worker node CLI (see ``worker.cli``)."""

from worker.cli import app

if __name__ == "__main__":
    app(prog_name="python -m worker")
