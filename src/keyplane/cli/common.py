"""What every `keyplane` command shares: the --db and --json options, opening the store and KEK,
clean failures (exit code 1, one red line on stderr, never a traceback), and the audit actor."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer

from keyplane.cli.output import err_console
from keyplane.clock import SystemClock
from keyplane.errors import KeyplaneError
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings, load_kek
from keyplane.store import Store, open_store

__all__ = [
    "DbOption",
    "JsonOption",
    "KeyFilterOption",
    "LimitOption",
    "SinceOption",
    "admin_actor",
    "fail",
    "opened",
    "parse_since",
    "plain_store",
    "service_for",
    "settings_for",
    "since_cutoff_ms",
]

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: KEYPLANE_DATABASE_URL or sqlite:///./keyplane.db)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
#: the filters of the list and summary commands (audit list, alerts list, usage)
KeyFilterOption = Annotated[
    str | None, typer.Option("--key", help="Only the rows of this api key.")
]
SinceOption = Annotated[str | None, typer.Option("--since", help="Only the last 30m, 1h, 2d, ...")]
LimitOption = Annotated[int | None, typer.Option("--limit", help="Only the newest N.", min=1)]

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit with code 1."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def settings_for(db: str | None) -> Settings:
    """Settings from the environment, with --db (when given) as the database URL."""
    return Settings(database_url=db) if db else Settings()


@contextmanager
def opened(db: str | None) -> Iterator[tuple[Store, KeyEncryptionKey, Settings]]:
    """The store, KEK and settings for one command; closed afterwards. A missing or malformed
    KEK, an unreachable database or a KeyplaneError inside become a clean exit code 1."""
    settings = settings_for(db)
    try:
        store = open_store(settings.database_url)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"cannot open the database: {type(exc).__name__}: {detail}")
    try:
        try:
            kek = load_kek(settings)
        except ValueError as exc:
            fail(str(exc))
        yield store, kek, settings
    except KeyplaneError as exc:
        fail(exc.ret_msg)
    finally:
        store.close()


@contextmanager
def plain_store(db: str | None) -> Iterator[Store]:
    """The store of --db without the KEK, for commands that read rows holding no secret
    (usage, alerts); closed afterwards. An unreachable database is a clean exit code 1."""
    settings = settings_for(db)
    try:
        store = open_store(settings.database_url)
    except Exception as exc:
        fail(f"cannot open the database: {type(exc).__name__}")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def service_for(db: str | None) -> Iterator[KeyService]:
    """A KeyService on the store of --db with the system clock (see opened())."""
    with opened(db) as (store, kek, _):
        yield KeyService(store, kek, SystemClock())


def admin_actor() -> str:
    """The audit actor of a CLI command: "admin:<OS user>" ("admin:unknown" if none)."""
    try:
        return f"admin:{getpass.getuser()}"
    except (OSError, KeyError):
        return "admin:unknown"


def parse_since(text: str) -> int:
    """A duration like "45s", "30m", "1h", "2d" in ms; raises ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None:
        raise ValueError(f"--since must look like 30m, 1h or 2d, not {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def since_cutoff_ms(since: str | None) -> int | None:
    """--since as a cutoff (ms since epoch: now minus the duration), None without it; a
    malformed duration is a clean exit code 1."""
    if since is None:
        return None
    try:
        return SystemClock().now_ms() - parse_since(since)
    except ValueError as exc:
        fail(str(exc))
