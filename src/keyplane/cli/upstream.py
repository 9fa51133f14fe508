"""`keyplane upstream`: the exchange credentials a Bybit-kind gateway re-signs requests with.

    keyplane upstream set-credentials --api-key KEY            (secret from a hidden prompt)
    printf %s "$SECRET" | keyplane upstream set-credentials --api-key KEY --secret-stdin
    keyplane upstream set-credentials --api-key KEY --rsa-private-key-file exchange.pem
    keyplane upstream show [--json]        api key masked, kind, type, set-at; never the secret
    keyplane upstream clear [--yes]

The secret is encrypted under the key-encryption key before it reaches the store; running
gateways on the same database pick a change up within one revision poll (no restart).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyplane.cli.common import DbOption, JsonOption, admin_actor, fail, opened
from keyplane.cli.output import console, err_console, print_json, print_kv
from keyplane.clock import SystemClock
from keyplane.errors import KeyplaneError
from keyplane.gateway.credentials import (
    KeyType,
    clear_upstream_credentials,
    load_upstream_credentials,
    mask_api_key,
    save_upstream_credentials,
)
from keyplane.keys import iso_utc
from keyplane.secret import Secret
from keyplane.store.protocol import UpstreamCredentialsRecord

__all__ = ["upstream_app"]

upstream_app = typer.Typer(
    help="Exchange credentials of a --upstream-kind bybit gateway (stored encrypted).",
    no_args_is_help=True,
)


def _read_secret(secret_stdin: bool, rsa_file: Path | None) -> tuple[Secret[str], KeyType]:
    """The secret and its key type from the RSA file, stdin, or a hidden prompt on a terminal."""
    if rsa_file is not None:
        if secret_stdin:
            fail("give either --secret-stdin or --rsa-private-key-file, not both")
        try:
            return Secret(rsa_file.read_text(encoding="utf-8")), "rsa"
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {rsa_file}: {type(exc).__name__}")
    if secret_stdin:
        return Secret(sys.stdin.read()), "hmac"
    if not sys.stdin.isatty():
        fail(
            "stdin is not a terminal: pass the secret on stdin with --secret-stdin "
            "(or an RSA key with --rsa-private-key-file)"
        )
    return Secret(typer.prompt("Upstream API secret", hide_input=True)), "hmac"


def _document(record: UpstreamCredentialsRecord) -> dict[str, Any]:
    return {
        "apiKey": mask_api_key(record.api_key),
        "kind": "bybit",
        "type": record.key_type,
        "setAt": iso_utc(record.set_at_ms),
    }


@upstream_app.command("set-credentials")
def set_credentials(
    api_key: Annotated[str, typer.Option("--api-key", help="The exchange (upstream) api key.")],
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the HMAC secret from stdin.")
    ] = False,
    rsa_private_key_file: Annotated[
        Path | None,
        typer.Option(
            "--rsa-private-key-file",
            help="PEM RSA private key of an RSA exchange key (instead of an HMAC secret).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store the exchange credentials (encrypted under the KEK), replacing earlier ones."""
    secret, key_type = _read_secret(secret_stdin, rsa_private_key_file)
    with opened(db) as (store, kek, _):
        record = save_upstream_credentials(
            store,
            kek,
            api_key=api_key,
            secret=secret,
            key_type=key_type,
            now_ms=SystemClock().now_ms(),
            actor=admin_actor(),
        )
    if as_json:
        print_json(_document(record))
        return
    console.print(
        f"Stored upstream credentials for api key {mask_api_key(record.api_key)} "
        f"({record.key_type}); running gateways use them within a second.",
        highlight=False,
    )


@upstream_app.command("show")
def show(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show the stored upstream credentials: api key (masked), kind, type, set-at; never the
    secret. Also checks that they decrypt under this KEK."""
    with opened(db) as (store, kek, _):
        record = store.find_upstream_credentials()
        decrypts = False
        if record is not None:
            try:
                decrypts = load_upstream_credentials(store, kek) is not None
            except KeyplaneError:
                decrypts = False
    if record is None:
        if as_json:
            print_json({})
        err_console.print("No upstream credentials set (keyplane upstream set-credentials).")
        return
    document = {**_document(record), "decrypts": decrypts}
    if as_json:
        print_json(document)
        return
    print_kv("upstream credentials", document)
    if not decrypts:
        err_console.print("[red]they do not decrypt under this KEK (wrong KEYPLANE_KEK?)[/red]")


@upstream_app.command("clear")
def clear(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the stored upstream credentials (a bybit gateway then answers 10016)."""
    if not yes and sys.stdin.isatty() and not typer.confirm("Delete the upstream credentials?"):
        raise typer.Exit(1)
    with opened(db) as (store, _, _):
        cleared = clear_upstream_credentials(
            store, now_ms=SystemClock().now_ms(), actor=admin_actor()
        )
    if as_json:
        print_json({"cleared": cleared})
        return
    console.print("Cleared the upstream credentials." if cleared else "Nothing to clear.")
