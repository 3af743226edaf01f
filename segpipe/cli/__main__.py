"""``python -m segpipe.cli``: the ``segpipe`` command."""

import os

from segpipe.cli.entry import run_and_exit

os.environ.setdefault("PYTHONUNBUFFERED", "1")
if __name__ == "__main__":  # not when a spawned child process imports this module as its main
    run_and_exit()
