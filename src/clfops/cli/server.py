"""`clfops server`."""

from __future__ import annotations

import sys

import click

from clfops.cli.base import EXIT_USAGE, friendly, main


@main.command()
@click.option(
    "--backend-store-uri",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="sqlite:///FILE, postgresql://USER:PW@HOST:PORT/DB or mysql://USER:PW@HOST:PORT/DB.",
)
@click.option(
    "--artifacts-destination",
    default="./mlartifacts",
    show_default=True,
    help="Folder or s3://BUCKET/PREFIX (MLFLOW_S3_ENDPOINT_URL + AWS_* for MinIO/SeaweedFS).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; beyond loopback needs --auth.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--auth", is_flag=True, help="MLflow basic auth; admin password from $CLFOPS_ADMIN_PASSWORD.")
@click.option("--admin-username", default="admin", show_default=True)
@click.option("--admin-password-file", default=None, help="File holding the admin password (instead of the env var).")
@click.option("--auth-db-uri", default=None, help="Users/permissions store (default: the backend's database).")
@click.option(
    "--default-permission",
    default="READ",
    show_default=True,
    type=click.Choice(["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]),
)
@click.option("--allowed-hosts", default=None, help="Host headers to accept, e.g. mlflow.example.com.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without --auth (a proxy authenticates).")
@friendly
def server(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    admin_username: str,
    admin_password_file: str | None,
    auth_db_uri: str | None,
    default_permission: str,
    allowed_hosts: str | None,
    insecure: bool,
) -> None:
    """Start a team MLflow tracking server (checked first); Ctrl-C stops it and all its workers."""
    from clfops.server.checks import ServerError
    from clfops.server.serve import ServerSettings, serve

    settings = ServerSettings(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        auth=auth,
        insecure=insecure,
        admin_username=admin_username,
        admin_password_file=admin_password_file,
        auth_db_uri=auth_db_uri,
        default_permission=default_permission,
        allowed_hosts=allowed_hosts,
    )
    try:
        code = serve(settings)
    except ServerError as err:  # before the server process exists: one line, exit 2
        click.echo(f"clfops: error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code)
