"""What a person sees while `neurolabel backfill` runs: a rich progress bar on stderr, log lines above it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from daemon.backfill.run import BackfillCounts


@contextlib.contextmanager
def progress_bar(console: Console | None = None) -> Iterator[Callable[[BackfillCounts], None]]:
    """Yields the `on_progress` callback; warnings of neurolabel's loggers print above the bar meanwhile."""
    console = console or Console(stderr=True)
    handler = RichHandler(console=console, show_path=False)
    root = logging.getLogger("neurolabel")
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("neurolabel.backfill").setLevel(logging.INFO)
    columns = (
        TextColumn("[bold]backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} reports/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("backfill", total=None, rate="-")

            def update(counts: BackfillCounts) -> None:
                progress.update(task, total=counts.total, completed=counts.read, rate=f"{counts.throughput:.1f}")

            yield update
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
