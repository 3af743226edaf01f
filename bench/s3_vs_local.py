"""s3_vs_local: the same run with its inputs and outputs on S3 against local disk.

S3 is moto's ``ThreadedMotoServer`` on 127.0.0.1 (a free port) inside this process, with dummy credentials;
segpipe finds it through ``AWS_ENDPOINT_URL`` (see segpipe/storage/options.py). The image and its truth are
uploaded with boto3; the command reads ``s3://BUCKET/in/...`` and writes ``--out s3://BUCKET/out``. MLflow
stays in the session's local store. Ratio: S3 / local wall time of the whole command (moto keeps objects in
memory and serves them from Python, so this measures segpipe's request pattern more than a real store's
latency).

``requests`` counts the requests each S3 command made, by kind (LIST: a GET on the bucket), for the timed run
and for one more at twice the edge (four times the chunks, where the default chunk allows: not at --quick
sizes); ``requests_fit`` splits them into a fixed part per image and a part per chunk, and extrapolates to a
32768^2 image (docs/capacity.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench.harness import Context, SegpipeRun, ratio

NAME = "s3_vs_local"
CHUNK = 1024  # segpipe run's default --chunk
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BUCKET = "segpipe-bench"
S3_ENV: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "segpipe-bench",
    "AWS_SECRET_ACCESS_KEY": "segpipe-bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    **dict.fromkeys(("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN")),  # unset
    **dict.fromkeys(("FSSPEC_S3", "FSSPEC_S3_ENDPOINT_URL")),
}


class RequestCounter(logging.Handler):
    """Counts the S3 requests moto's server logs (werkzeug writes one INFO record per request), by kind."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        line = ANSI.sub("", str(record.args[0])) if isinstance(record.args, tuple) and record.args else ""
        method, _, rest = line.partition(" ")
        if method:
            self.counts[request_kind(method, rest.split(" ")[0])] += 1

    def take(self) -> dict[str, int]:
        """The counts so far, then start again from zero."""
        with self.lock or nullcontext():
            counts, self.counts = dict(sorted(self.counts.items())), Counter()
        return counts


def request_kind(method: str, target: str) -> str:
    """GET, LIST (a GET on the bucket), PUT, HEAD, DELETE, POST (multi-delete, multipart) ..."""
    path, _, query = target.partition("?")
    if method == "GET" and (path.rstrip("/").count("/") <= 1 or "list-type" in query):
        return "LIST"
    return method


@contextmanager
def moto_server() -> Iterator[tuple[dict[str, str | None], RequestCounter]]:
    """A moto S3 server on loopback; yields the environment a command needs to use it and a request counter."""
    from moto.server import ThreadedMotoServer

    log = logging.getLogger("werkzeug")
    counter = RequestCounter()
    saved = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False  # counted, not printed
    log.addHandler(counter)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}, counter
    finally:
        server.stop()
        log.removeHandler(counter)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def s3_client(env: dict[str, str | None]) -> Any:
    """A boto3 client for the server in ``env``."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def upload(client: Any, files: list[Path]) -> list[str]:
    """Upload ``files`` under ``in/`` of the bucket; return their URLs."""
    for path in files:
        client.upload_file(str(path), BUCKET, f"in/{path.name}")
    return [f"s3://{BUCKET}/in/{path.name}" for path in files]


def chunks(size: int) -> int:
    """Output chunks of a ``size``^2 image at the default chunk edge."""
    return math.ceil(size / CHUNK) ** 2


def request_fit(requests: dict[str, dict[str, int]]) -> dict[str, Any] | None:
    """``requests = per_image + per_chunk * chunks`` for each kind, from runs at two sizes with different chunk
    counts, and what that gives for a 32768^2 image (1024 chunks); None when the chunk counts are equal."""
    (small, few), (large, many) = sorted(requests.items(), key=lambda item: int(item[0]))
    if chunks(int(small)) == chunks(int(large)):
        return None
    spread = chunks(int(large)) - chunks(int(small))
    fit = {}
    for kind in sorted(set(few) | set(many)):
        per_chunk = (many.get(kind, 0) - few.get(kind, 0)) / spread
        per_image = few.get(kind, 0) - per_chunk * chunks(int(small))
        fit[kind] = {"per_image": per_image, "per_chunk": per_chunk, "gigapixel": per_image + per_chunk * 1024}
    return fit


def on_s3(ctx: Context, sizes: tuple[int, int]) -> tuple[SegpipeRun, dict[str, dict[str, int]]]:
    """The timed S3 run at ``sizes[0]``, then one at ``sizes[1]`` counted only; their requests by kind."""
    requests: dict[str, dict[str, int]] = {}
    timed: SegpipeRun | None = None
    with moto_server() as (env, counter):
        client = s3_client(env)
        client.create_bucket(Bucket=BUCKET)
        for size in sizes:
            urls = upload(client, list(ctx.sample(size)))
            counter.take()
            ctx.log(f"s3_vs_local: segpipe run {size}^2 on S3 ({env['AWS_ENDPOINT_URL']})")
            done = ctx.segpipe(urls[:1], urls[1:], "", env=env, out=f"s3://{BUCKET}/out-{size}")
            requests[str(size)] = counter.take()
            timed = timed or done
    assert timed is not None
    return timed, requests


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.s3
    image, truth = ctx.sample(size)
    ctx.log(f"s3_vs_local: segpipe run {size}^2 on local disk")
    local = ctx.segpipe([image], [truth], f"local-{size}")
    remote, requests = on_s3(ctx, (size, 2 * size))
    return {
        "size": size,
        "local": {**local.summary(), "stages": local.stage_seconds()},
        "s3": {**remote.summary(), "stages": remote.stage_seconds()},
        "local_output": local.footprint(),
        "requests": {"chunks": {str(s): chunks(int(s)) for s in requests}, "by_size": requests},
        "requests_fit": request_fit(requests),
        "ratios": {
            f"S3/local seconds {size}^2": ratio(remote.seconds, local.seconds),
            f"S3/local flow {size}^2": ratio(remote.flow_seconds, local.flow_seconds),
        },
        "goals": [],
    }
