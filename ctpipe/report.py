"""``ctpipe report``: the funnel totals per owner domain and content key (``sinks.report``).

Input: ClickHouse at ``CTPIPE_CLICKHOUSE_URL`` (a server, or embedded data no sink holds),
``--owner``, ``--since``/``--until`` (ISO dates or datetimes, UTC). Output: ``--format json``
prints the public JSON contract of ``sinks.report`` (documented in the README); ``--format table``
a summary for people. Exit 0, 1 on a ClickHouse error, 2 on a bad argument.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from ctpipe.settings import Settings
from schemas.funnel import STAGE_MEASURES

FORMATS = ("json", "table")


def run(
    settings: Settings,
    *,
    fmt: str = "json",
    owner: str | None = None,
    since: str | None = None,
    until: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from sinks.clickhouse import ClickHouseError, connect
    from sinks.report import ReportError, funnel_report

    if fmt not in FORMATS:
        print(f"error: --format must be one of {', '.join(FORMATS)}", file=err)
        return 2
    try:
        client = connect(settings.clickhouse_url, create_database=False)
        report = funnel_report(client, owner=owner, since=since, until=until)
    except ReportError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except ClickHouseError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except Exception as exc:  # e.g. the database or table does not exist yet
        print(f"error: cannot read the funnel from ClickHouse: {str(exc).splitlines()[0]}", file=err)
        print("(a database created by an older ctpipe needs `ctpipe db migrate` first)", file=err)
        return 1
    if fmt == "json":
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        _table(report, out)
    return 0


def _table(report: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("owner", "content", *STAGE_MEASURES, "value", title="funnel")
    for o in report["owners"]:
        for c in o["content"]:
            value = ", ".join(f"{k} {v}" for k, v in c["conversion_value"].items())
            table.add_row(o["owner_domain"], c["content_key"], *(str(c[m]) for m in STAGE_MEASURES), value)
    t = report["totals"]
    value = ", ".join(f"{k} {v}" for k, v in t["conversion_value"].items())
    table.add_row("total", "", *(str(t[m]) for m in STAGE_MEASURES), value, style="bold")
    Console(file=out, width=160).print(table)
