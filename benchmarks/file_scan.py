"""The file source's scan on the fan-out config: 5,000 files, each one Backend and one Route.

Times, in this process (no server): the first scan (read and parse everything), a scan with
nothing changed (the poll every 100 ms), and a scan after one file was edited.

    uv run python benchmarks/file_scan.py [--files 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout import write  # noqa: E402

from xds_operator.sources.files import FileSource  # noqa: E402
from xds_operator.sources.state import StateStore  # noqa: E402


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main(files: int, repeat: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = Path(tempfile.mkdtemp(prefix="xds-scan-")) / "config"
    config.mkdir()
    try:
        for i in range(files):
            write(config, i)
        first, idle, edited = [], [], []
        for round_ in range(repeat):
            source = FileSource(config, StateStore())
            first.append(timed(source.scan))
            idle.append(statistics.median(timed(source.scan) for _ in range(20)))
            write(config, 0, marker=f"edit-{round_}")
            edited.append(timed(source.scan))
        print(f"file source scan, {files} files ({2 * files} objects), median of {repeat}:")
        print(f"  first scan (read + parse all)   {statistics.median(first):8.1f} ms")
        print(f"  scan, nothing changed           {statistics.median(idle):8.1f} ms")
        print(f"  scan after one file edited      {statistics.median(edited):8.1f} ms")
    finally:
        shutil.rmtree(config.parent)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    main(args.files, args.repeat)
