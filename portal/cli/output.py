"""How the CLI prints: tables (never cut, never read as markup), ``--json``, money and times,
and the one way a command fails (``fail``: click prints ``Error: …`` and exits non-zero)."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import NoReturn

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .. import integrations as ig

console = Console(highlight=False)


def fail(msg: str) -> NoReturn:
    raise click.ClickException(msg)


def say(message) -> None:
    """Print through the console (rich markup in ``message`` is read: escape what is data)."""
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def table(title: str, *cols: str) -> Table:
    """A table whose values are never cut: on a terminal a long value folds onto more lines
    (``overflow="fold"``, no ellipsis); piped, ``print_table`` prints it at its full width."""
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c, overflow="fold")
    return t


def row(t: Table, *values) -> None:
    """Add a row of plain text: a value such as ``[red]x`` or ``:smile:`` is shown as it is,
    never read as rich markup."""
    t.add_row(*(v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in values))


def print_table(t: Table) -> None:
    """On a terminal: the console's width (long values fold). Not on a terminal (a pipe, a
    file, a test): one line per row at the table's natural width, nothing wrapped or cut."""
    if console.is_terminal:
        console.print(t)
        return
    width = Measurement.get(console, console.options.update_width(1 << 20), t).maximum
    Console(highlight=False, width=max(width, 20)).print(t)


def print_fields(title: str, fields) -> None:
    """One object as a two-column table: ``fields`` is [(name, value)] in order."""
    t = Table(show_header=False, title=title, title_justify="left")
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for k, v in fields:
        row(t, k, v)
    print_table(t)


def print_json(value) -> None:
    """``--json``: full values, stable keys (the API's shapes where the API has the object)."""
    click.echo(json.dumps(value, indent=1, ensure_ascii=False))


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def usd(value) -> str:
    return ig.format_usd(Decimal(str(value)))
