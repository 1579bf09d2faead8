"""`clfops show REF`: where a model came from (registry/show.py builds the document)."""

from __future__ import annotations

import json

import click

from clfops.cli.base import STORE_HELP, friendly, main


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The same sections as one JSON document.")
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def show(ref: str, as_json: bool, tracking_uri: str | None) -> None:
    """What a model is and where it came from: REF is a run dir, checkpoint, run id, runs:/ID/model,
    models:/NAME@ALIAS or models:/NAME/N. Sections: What, Data, Code, Configuration, Who/where/when, Lineage."""
    from clfops.registry.show import render
    from clfops.registry.show import show as provenance

    doc = provenance(ref, tracking_uri)
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else render(doc))
