"""``segpipe model register``: a model file as a new version in the MLflow model registry."""

from __future__ import annotations

import argparse
import dataclasses
import json

from segpipe.cli.process import quiet_service_logs


def register_command(args: argparse.Namespace) -> int:
    """Validate FILE as ``run --model FILE`` would, then register it; a bad file fails before any server."""
    from segpipe.models import resolve_model
    from segpipe.models.register import EXPERIMENT, register_model
    from segpipe.storage import public_url
    from segpipe.tracking import MlflowTracker, check_reachable, check_tracking_uri, default_tracking_uri

    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    quiet_service_logs()
    ref = resolve_model(args.file, channels=args.channels)  # a bad file fails here (exit 3), before any server
    check_reachable(tracking_uri)
    MlflowTracker(tracking_uri, EXPERIMENT)  # opens the experiment (artifacts beside a sqlite store); exit 5 if down
    model = register_model(args.file, args.name, args.alias, tracking_uri, channels=args.channels)
    if args.json:
        values = {**dataclasses.asdict(model), "alias": args.alias, "format": ref.format, "sha256": ref.sha256}
        print(json.dumps({**values, "tracking_uri": public_url(tracking_uri)}, indent=2))
    else:
        alias = f", alias {args.alias}" if args.alias else ""
        print(f"registered {model.name} version {model.version} ({model.uri}){alias}")
    return 0
