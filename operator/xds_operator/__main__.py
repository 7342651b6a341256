"""The `xds-operator` program (and `python -m xds_operator`).

Ctrl-C or SIGTERM while Python is still importing ends the process the Unix way, killed by that
signal (exit status 130 or 143) and quietly, instead of a KeyboardInterrupt traceback from
somewhere in an import. The long-running commands take over the signals as soon as they begin
(see stop_signals); this is in the entry point, not in cli.py, so importing the CLI (as tests
do) leaves the importer's signal handling alone.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)

import sys  # noqa: E402  (after the line above, on purpose)

from xds_operator.cli import main  # noqa: E402


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
