"""``segpipe runs show``: where a batch run's result came from, read back from MLflow."""

from __future__ import annotations

import argparse
import json

from segpipe.cli.process import quiet_service_logs


def show_command(args: argparse.Namespace) -> int:
    """Print RUN_ID's lineage as text or JSON."""
    from segpipe.runs import read_lineage, render_lineage
    from segpipe.tracking import default_tracking_uri

    quiet_service_logs()
    lineage = read_lineage(args.run_id, args.tracking_uri or default_tracking_uri())
    print(json.dumps(lineage.to_json(), indent=2) if args.json else render_lineage(lineage))
    return 0
