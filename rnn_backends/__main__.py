"""The command line's entry point: ``python -m rnn_backends`` and the ``rnn-backends`` script.

Importing the command line takes most of a second (NumPy and the package), so the import runs
inside the handler that turns Ctrl-C into one line and status 130, as :func:`.cli.main` does for
the command itself.
"""

from __future__ import annotations

import sys


def run() -> int:
    """Import and run the command line; Ctrl-C at any point is one line and status 130."""
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        print("rnn-backends: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
