"""``python -m segpipe.cli``: the ``segpipe`` command."""

import os

from segpipe.cli.entry import run_and_exit

os.environ.setdefault("PYTHONUNBUFFERED", "1")
run_and_exit()
