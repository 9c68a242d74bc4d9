"""The ``persession`` command.

::

    persession purge sqlite:///var/lib/app/sessions.db   # delete expired sessions now
    persession --version
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .exceptions import PersessionError

__all__ = ["main"]

_EPILOG = """examples:
  persession purge sqlite:///var/lib/app/sessions.db
  persession purge sqlite://          (the default file)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persession",
        description="Server-side sessions for WSGI and ASGI apps.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"persession {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    purge = commands.add_parser(
        "purge",
        help="delete expired sessions from a SQLite store now",
        description="Delete expired sessions from a SQLite store (they are never served; this reclaims space).",
    )
    purge.add_argument("url", help="the store URL, e.g. sqlite:///var/lib/app/sessions.db")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _purge(args.url)


def _purge(url: str) -> int:
    from .stores import SqliteStore, store_from_url

    if not url.lower().startswith("sqlite:"):
        return _fail("purge works on sqlite: URLs; Redis and MongoDB expire sessions themselves")
    try:
        store = store_from_url(url)
    except PersessionError as error:
        return _fail(str(error))
    if not isinstance(store, SqliteStore) or not store.path.is_file():
        return _fail(f"no SQLite session database at {getattr(store, 'path', url)}")
    try:
        removed = store.purge()
    except PersessionError as error:
        return _fail(str(error))
    finally:
        store.close()
    print(f"removed {removed} expired session(s) from {store.path}")
    return 0


def _fail(message: str) -> int:
    print(f"persession: error: {message}", file=sys.stderr)
    return 2
