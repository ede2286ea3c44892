"""Logging set-up for rule scripts and a throttled progress reporter."""

from __future__ import annotations

import logging
import sys
import time
from importlib import metadata


def configure(
    log_path: str | None = None, level: int = logging.INFO, append: bool = False, label: str | None = None
) -> logging.Logger:
    """Send log records to ``log_path`` (the rule's ``log:``) and to stderr.

    An exception that ends the script is written to the log file too, with
    its traceback, so the file Snakemake points at after a failure says what
    went wrong; on the console, bad input (a ValueError such as InputError)
    is its one-line message.
    ``append`` adds to the file (the ranks of a training run share the
    rule's log); ``label`` (e.g. "rank 1") starts each of this process's lines.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        file_handler = logging.FileHandler(log_path, mode="a" if append else "w")
        handlers.append(file_handler)
        default_hook = sys.excepthook

        def log_then_raise(kind, error, traceback):
            record = logging.LogRecord("cryoflow", logging.ERROR, __file__, 0, "%s: %s", (kind.__name__, error), None)
            record.exc_info = (kind, error, traceback)  # the message, then the traceback, in the rule's log
            file_handler.handle(record)
            if issubclass(kind, ValueError):  # bad input (InputError): one line on the console
                sys.stderr.write(f"{kind.__name__}: {error}\n(the traceback is in {log_path})\n")
            else:  # a bug: the traceback on the console too
                default_hook(kind, error, traceback)

        sys.excepthook = log_then_raise
    logging.basicConfig(
        level=level,
        format="%(asctime)s " + (f"[{label}] " if label else "") + "%(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return logging.getLogger("cryoflow")


class Progress:
    """Log ``done/total`` with a rate and ETA at most every ``every_s`` seconds, and at the end."""

    def __init__(self, total: int, label: str, unit: str = "items", every_s: float = 10.0, logger=None, budget_s=None):
        """``budget_s``: a wall-time budget that ends the work early (train.max_hours); the ETA never exceeds it."""
        self.total, self.label, self.unit, self.every_s = total, label, unit, every_s
        self.log = logger or logging.getLogger("cryoflow.progress")
        self.start = self.last = time.perf_counter()
        self.end = self.start + budget_s if budget_s else float("inf")
        self.done = 0

    def update(self, n: int = 1, **fields) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = min((self.total - self.done) / rate if rate > 0 else float("inf"), max(self.end - now, 0.0))
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        percent = 100.0 * self.done / max(self.total, 1)
        self.log.info(
            "%s %d/%d (%.0f%%) %.1f %s/s eta %.0fs %s",
            self.label,
            self.done,
            self.total,
            percent,
            rate,
            self.unit,
            eta,
            extra,
        )

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)


def package_versions(names: list[str]) -> dict[str, str]:
    """Installed versions of the named distributions ("not installed" when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
