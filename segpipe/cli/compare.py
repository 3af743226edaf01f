"""``segpipe report``: MLflow batch runs side by side, to see which model won."""

from __future__ import annotations

import argparse
import json


def compare_command(args: argparse.Namespace) -> int:
    """Print the given (or the latest) batch runs as a table or JSON."""
    from segpipe.runs import compare_runs
    from segpipe.tracking import default_tracking_uri, fetch_runs

    tracking_uri = args.tracking_uri or default_tracking_uri()
    runs = fetch_runs(tracking_uri, args.run_ids, args.experiment, args.last)
    print(json.dumps(runs, indent=2) if args.json else compare_runs(runs))
    return 0
