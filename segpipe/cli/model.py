"""``segpipe model register`` (a model file as a new version in the MLflow model registry) and ``model check``."""

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
    trust_code = getattr(args, "trust_model_code", False)
    # a bad file fails here (exit 3), before any server
    ref = resolve_model(args.file, channels=args.channels, trust_code=trust_code)
    if ref.format == "bioimageio":
        from segpipe.errors import ModelError
        from segpipe.models.check import check_package

        result = check_package(ref, trust_code)
        print(result.line())
        if not result.passed:
            raise ModelError(f"{ref.uri}: fails its own test; not registered")
    check_reachable(tracking_uri)
    MlflowTracker(tracking_uri, EXPERIMENT)  # opens the experiment (artifacts beside a sqlite store); exit 5 if down
    model = register_model(
        args.file, args.name, args.alias, tracking_uri, channels=args.channels, trust_code=trust_code
    )
    if args.json:
        values = {**dataclasses.asdict(model), "alias": args.alias, "format": ref.format, "sha256": ref.sha256}
        print(json.dumps({**values, "tracking_uri": public_url(tracking_uri)}, indent=2))
    else:
        alias = f", alias {args.alias}" if args.alias else ""
        print(f"registered {model.name} version {model.version} ({model.uri}){alias}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Run a bioimage.io package on its test input: PASS (exit 0) or FAIL (exit 3), with the largest difference."""
    from segpipe.models import resolve_model
    from segpipe.models.check import check_package

    ref = resolve_model(args.package, trust_code=args.trust_model_code)
    result = check_package(ref, args.trust_model_code)
    if args.json:
        values = {"uri": result.uri, "passed": result.passed, "max_abs_diff": result.max_abs_diff}
        print(
            json.dumps({**values, "mismatched": result.mismatched, "tolerance": dataclasses.asdict(result.tolerance)})
        )
    else:
        print(result.line())
    return 0 if result.passed else 3
