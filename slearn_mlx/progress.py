"""What a run is doing, on a terminal and in a log.

On a terminal, long work draws tqdm's bars. Anywhere else (`> run.log 2>&1`, nohup, cron, CI, a notebook
cell) a bar would write every redraw, so the "slearn_mlx" logger gets plain lines instead: when a stage
starts and ends, every INTERVAL seconds during long work (done of all, rate, time left, the loss while
training), each epoch's loss and check, in words like the final table's. The commands send the lines to
stderr and, whatever stderr is, to the run folder's log.txt (`configure`, `log_to`); a script of the
user's own sees them through `logging` as it sets it up. Lines hold no control characters.
"""

import logging
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("slearn_mlx")

INTERVAL = 30.0  # seconds between two lines of the same long work
LOG_FILE = "log.txt"
# tqdm's short units, as words in a line.
UNIT_WORDS = {"q": "records", "batch": "batches"}

# What the commands set up (`configure`): their handlers, and whether stderr shows bars.
handlers: dict[str, logging.Handler] = {}
bars = True


class Periodic(logging.Filter):
    """Leaves out the periodic lines where a bar already shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "periodic", False) and draws_bars())


def draws_bars() -> bool:
    return bars and sys.stderr.isatty()


def configure(verbosity: int = 0) -> None:
    """The commands' logging: -1 (--quiet) errors only, 0 a line per stage and per INTERVAL of long work,
    1 (--verbose) a line per batch too. On a terminal, bars instead of the periodic lines."""
    global bars
    bars = verbosity >= 0
    for handler in handlers.values():
        log.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("slearn-mlx: %(message)s" if sys.stderr.isatty() else
                                          "%(asctime)s slearn-mlx: %(message)s", "%H:%M:%S"))
    stderr.setLevel({-1: logging.ERROR, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    stderr.addFilter(Periodic())
    handlers.clear()
    handlers["stderr"] = stderr
    log.addHandler(stderr)
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)


def log_to(folder: Path) -> None:
    """Every line from now on also into FOLDER/log.txt (appended: a resumed run goes on in the same file)."""
    if "file" in handlers:
        log.removeHandler(handlers["file"])
        handlers.pop("file").close()
    file = logging.FileHandler(folder / LOG_FILE, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handlers["file"] = file
    log.addHandler(file)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """tqdm's interface as the stages use it (iterate, or `with` and `update(n)`; `set_postfix`), drawing a
    bar on a terminal and logging lines: every INTERVAL seconds while the work lasts, and one at its end."""

    def __init__(self, iterable=None, desc: str = "", total: int | None = None, initial: int = 0, unit: str = "it",
                 shown: bool = True, **options):
        self.iterable, self.desc, self.unit, self.shown = iterable, desc, UNIT_WORDS.get(unit, unit), shown
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = self.initial = initial
        self.postfix: dict[str, str] = {}
        self.started = time.monotonic()
        self.bar = tqdm(total=self.total, desc=desc, initial=initial, unit=unit,
                        disable=not (shown and draws_bars()), **options)
        self.stopped = threading.Event()
        if shown:
            threading.Thread(target=self.every_interval, daemon=True).start()

    def every_interval(self):
        while not self.stopped.wait(INTERVAL):
            log.info(self.line(), extra={"periodic": True})

    def line(self, final: bool = False) -> str:
        """"diagnose: 120 of 400 records, 2.10/s, 2m13s left, loss 1.234"; at the end, the time it took instead."""
        seconds = time.monotonic() - self.started
        rate = (self.n - self.initial) / seconds if seconds else 0.0
        done = f"{self.n} of {self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"
        parts = [done + (f" in {duration(seconds)}" if final else ""), f"{rate:.2f}/s"]
        if not final and self.total is not None and rate:
            parts.append(f"{duration((self.total - self.n) / rate)} left")
        return f"{self.desc}: " + ", ".join(parts + [f"{k} {v}" for k, v in self.postfix.items()])

    def update(self, n: int = 1):
        self.n += n
        self.bar.update(n)
        if self.shown:
            log.debug(self.line())

    def set_postfix(self, **values):
        self.postfix.update({k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in values.items()})
        self.bar.set_postfix(self.postfix)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:  # also when the loop stops early (training's time budget)
            self.close()

    def close(self):
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.bar.close()
        if self.shown and self.n > self.initial:
            log.info(self.line(final=True))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stage_started(stage: str) -> None:
    log.info(f"{stage}: started")


def epoch_line(row: dict) -> str:
    """A row of train_log.jsonl as a line: an epoch's loss, its check's results, or why training stopped."""
    if row["event"] == "epoch":
        return (f"train epoch {row['epoch']}: {row['records']} records, loss {row['loss']:.3f}, "
                f"{duration(row['seconds'])}")
    if row["event"] == "check":
        (known, of_known), (unknown, of_unknown) = row["right_known"], row["right_unknown"]
        validation = row.get("validation_accuracy")
        return (f"check epoch {row['epoch']}: known {known}/{of_known} right, unknown {unknown}/{of_unknown} right, "
                f"{len(row['left'])} left, {len(row['returned'])} returned"
                + (f", validation {100 * validation:.1f}%" if validation is not None else "")
                + (", kept" if row.get("kept") else ""))
    return f"training stopped after epoch {row['epoch']}: {row['reason']}"
