"""What an operator sees of a bulk job: the live progress, and the summary at the end.

Two progress reporters behind one small protocol: a rich progress bar (done, each outcome, rate,
ETA) when the output is a terminal, and plain periodic lines otherwise (a CI log, a file,
``nohup``), where redrawing a bar would only fill the log with control characters.
:func:`make_progress` picks one. :func:`format_summary` renders a :class:`BulkSummary` as tables,
as plain text. Both speak the results file's words: the outcomes (``verified``,
``not_verified``, ``rejected``, ``error``, ``invalid``) and ``needs review``.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol, TextIO

import attrs
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .. import errors
from ._journal import LatencyStats

__all__ = [
    "FAILED_OUTCOMES",
    "OUTCOMES",
    "BulkSummary",
    "NullProgress",
    "PlainProgress",
    "ProgressReporter",
    "ProgressStats",
    "RichProgress",
    "explain_error",
    "format_summary",
    "make_progress",
    "outcome_counts",
]

# Every terminal outcome an applicant can have, in the order a summary lists them.
OUTCOMES: Final = ("verified", "not_verified", "rejected", "error", "invalid")
FAILED_OUTCOMES: Final = frozenset({"rejected", "error", "invalid"})
DEFAULT_PLAIN_INTERVAL: Final = 10.0


@attrs.frozen
class ProgressStats:
    """Where a running job stands: applicants finished in this run (``done``, of which
    ``failed``), ``skipped`` (finished in an earlier run), ``total`` rows when known,
    and ``elapsed`` seconds of this run; ``stopped`` once it was stopped early (no ETA then)."""

    done: int
    failed: int
    skipped: int
    total: int | None
    elapsed: float
    by_outcome: Mapping[str, int] = attrs.field(factory=dict)
    needs_review: int = 0
    stopped: bool = False

    @property
    def rate(self) -> float:
        """Applicants finished per second in this run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining(self) -> int | None:
        """Rows still to go, when the total is known."""
        if self.total is None:
            return None
        return max(0, self.total - self.done - self.skipped)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, when it can be told (never once stopped)."""
        remaining = self.remaining
        if remaining is None or self.rate <= 0 or self.stopped:
            return None
        return remaining / self.rate


class ProgressReporter(Protocol):
    """Receives the job's progress; the runner calls ``start``, ``update`` (often), ``close``."""

    def start(self, total: int | None, skipped: int = 0) -> None:
        """The job begins; ``total`` rows when known."""
        ...

    def update(self, stats: ProgressStats) -> None:
        """The job moved on (called on every finished applicant and about once a second)."""
        ...

    def close(self, stats: ProgressStats) -> None:
        """The job ended; show the final figures."""
        ...


class NullProgress:
    """Shows nothing."""

    def start(self, total: int | None, skipped: int = 0) -> None:
        """Nothing to show."""

    def update(self, stats: ProgressStats) -> None:
        """Nothing to show."""

    def close(self, stats: ProgressStats) -> None:
        """Nothing to show."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def outcome_counts(by_outcome: Mapping[str, int], needs_review: int = 0) -> str:
    """This run's outcomes in the results file's words, as the summary names them:
    ``verified 100, not_verified 3, rejected 10, error 2, invalid 5, needs review 1`` (an
    outcome no applicant reached yet is left out; ``none yet`` when there is none)."""
    parts = [f"{o} {by_outcome[o]}" for o in OUTCOMES if by_outcome.get(o)]
    parts += [f"{o} {n}" for o, n in sorted(by_outcome.items()) if o not in OUTCOMES and n]
    if needs_review:
        parts.append(f"needs review {needs_review}")
    return ", ".join(parts) or "none yet"


def progress_line(stats: ProgressStats) -> str:
    """One plain line: ``done 120/1000 (12%): verified 100, rejected 10, error 2, invalid 8,
    needs review 1; skipped 0; rate 4.1/s; elapsed 0:29; eta 3:35``."""
    finished = stats.done + stats.skipped
    if stats.total:
        head = f"done {finished}/{stats.total} ({100 * finished / stats.total:.0f}%)"
    else:
        head = f"done {finished}"
    eta = "stopped" if stats.stopped else f"eta {_duration(stats.eta)}"
    return (
        f"{head}: {outcome_counts(stats.by_outcome, stats.needs_review)}; skipped"
        f" {stats.skipped}; rate {stats.rate:.1f}/s; elapsed {_duration(stats.elapsed)}; {eta}"
    )


class PlainProgress:
    """Prints a progress line every ``interval`` seconds (and at the end) to ``stream``."""

    def __init__(
        self, stream: TextIO | None = None, *, interval: float = DEFAULT_PLAIN_INTERVAL
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._last = 0.0

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def start(self, total: int | None, skipped: int = 0) -> None:
        """Say what the job is about to do."""
        self._last = time.monotonic()
        rows = "an unknown number of" if total is None else str(total)
        self._write(f"bulk: {rows} row(s), {skipped} already finished")

    def update(self, stats: ProgressStats) -> None:
        """Print a line if ``interval`` has passed since the last one."""
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._write("bulk: " + progress_line(stats))

    def close(self, stats: ProgressStats) -> None:
        """Print the final line."""
        self._write("bulk: " + progress_line(stats))


class RichProgress:
    """A live rich progress bar: done of total, failed, rate, elapsed and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]bulk[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[outcomes]}"),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, total: int | None, skipped: int = 0) -> None:
        """Show the bar."""
        self._progress.start()
        self._task = self._progress.add_task(
            "bulk", total=total, completed=skipped, outcomes=outcome_counts({}), rate=0.0
        )

    def update(self, stats: ProgressStats) -> None:
        """Move the bar."""
        if self._task is not None:
            self._progress.update(
                self._task,
                completed=stats.done + stats.skipped,
                total=stats.total,
                outcomes=outcome_counts(stats.by_outcome, stats.needs_review),
                rate=stats.rate,
            )

    def close(self, stats: ProgressStats) -> None:
        """Draw the final state and stop redrawing."""
        self.update(stats)
        self._progress.stop()


def make_progress(
    stream: TextIO | None = None, *, interval: float = DEFAULT_PLAIN_INTERVAL
) -> ProgressReporter:
    """A rich progress bar when ``stream`` (default: stderr) is a terminal, else plain lines."""
    target = stream or sys.stderr
    isatty = getattr(target, "isatty", None)
    if callable(isatty) and isatty():
        return RichProgress(Console(file=target))
    return PlainProgress(target, interval=interval)


@attrs.frozen
class BulkSummary:
    """The end of a bulk run.

    Whole-job figures (every run of this journal): ``total`` rows of the manifest,
    ``by_outcome`` (including ``pending`` for applicants started but not finished yet and
    ``invalid`` for bad rows), ``not_started`` (rows no run has reached yet: a stopped job never
    read them; not in ``by_outcome`` nor in the results file), ``by_error``
    (error code, or error class when there is no code) and ``needs_review`` (finished
    applicants whose AML check matched, whose document was flagged as fake or whose registry
    check failed, whatever their outcome: ``verified`` does not include those checks). This
    run's figures: ``processed``
    applicants finished, ``skipped`` (finished before), ``resumed`` (continued from a journaled
    step), ``elapsed`` seconds, ``throughput`` (finished per second), ``latency`` per endpoint,
    ``requests`` sent, ``throttled`` signals received (429 or 4003). ``interrupted`` is true when
    a signal or ``stop()`` ended the run early, ``stop_reason`` says why; ``stopped_by_error`` is
    true when an error that no retry fixes stopped it (credentials refused, a permission missing,
    the manifest unreadable): fix that, then resume. ``total_known`` is false when the number
    of rows is not known (applicants from an iterable that was stopped before its end, no
    ``total`` given): ``total`` then counts only the rows reached, and an unknown number of
    rows after them are not started.
    """

    total: int
    by_outcome: Mapping[str, int]
    by_error: Mapping[str, int]
    processed: int
    skipped: int
    resumed: int
    elapsed: float
    throughput: float
    latency: Mapping[str, LatencyStats]
    requests: int
    throttled: int
    rate_limit: str
    concurrency: int
    interrupted: bool = False
    stop_reason: str | None = None
    stopped_by_error: bool = False
    journal: str | None = None
    results: str | None = None
    needs_review: int = 0
    not_started: int = 0
    total_known: bool = True

    @property
    def pending(self) -> int:
        """Applicants not finished yet (a resume continues them)."""
        return self.by_outcome.get("pending", 0)

    @property
    def complete(self) -> bool:
        """True when every row reached a terminal outcome."""
        return (
            self.pending == 0
            and self.not_started == 0
            and self.total_known
            and not self.interrupted
        )

    @property
    def failed(self) -> int:
        """Rows that ended rejected, in error or invalid."""
        return sum(n for outcome, n in self.by_outcome.items() if outcome in FAILED_OUTCOMES)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (for logs and dashboards)."""
        data = attrs.asdict(self, recurse=True)
        data["pending"] = self.pending
        data["complete"] = self.complete
        return data


def format_summary(summary: BulkSummary, *, width: int = 100) -> str:
    """The summary as plain-text tables: outcomes, errors, latency per endpoint, throughput."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, emoji=False)

    outcomes = Table(title="Applicants", title_justify="left")
    outcomes.add_column("outcome")
    outcomes.add_column("count", justify="right")
    # Known outcomes in their usual order, anything else after them.
    rank = {outcome: n for n, outcome in enumerate((*OUTCOMES, "pending"))}
    for outcome in sorted(summary.by_outcome, key=lambda o: (rank.get(o, len(rank)), o)):
        outcomes.add_row(outcome, str(summary.by_outcome[outcome]))
    if not summary.total_known:
        outcomes.add_row("not started", "unknown")
        outcomes.add_row("total", f"{summary.total} or more", end_section=True)
    else:
        if summary.not_started:
            outcomes.add_row("not started", str(summary.not_started))
        outcomes.add_row("total", str(summary.total), end_section=True)
    console.print(outcomes)

    if summary.needs_review:
        console.print(
            f"Needs review: {summary.needs_review} applicant(s) whose AML check matched, whose"
            " document was flagged as fake or whose registry (SRC) check did not pass, counted"
            " within their outcome above (verified included): filter the results on"
            " needs_review."
        )

    if summary.by_error:
        table = Table(title="Errors", title_justify="left")
        table.add_column("error code / class")
        table.add_column("count", justify="right")
        table.add_column("meaning")
        for key, n in summary.by_error.items():
            table.add_row(key, str(n), explain_error(key))
        console.print(table)

    if summary.latency:
        latency = Table(title="Latency per endpoint (ms)", title_justify="left")
        for column in ("endpoint", "requests", "p50", "p95", "p99"):
            latency.add_column(column, justify="left" if column == "endpoint" else "right")
        for step, stats in summary.latency.items():
            latency.add_row(
                step,
                str(stats.count),
                f"{stats.p50 * 1000:.0f}",
                f"{stats.p95 * 1000:.0f}",
                f"{stats.p99 * 1000:.0f}",
            )
        console.print(latency)

    console.print(
        f"This run: {summary.processed} finished, {summary.skipped} skipped (done before), "
        f"{summary.resumed} resumed, in {_duration(summary.elapsed)} "
        f"({summary.throughput:.2f} applicants/s); {summary.requests} requests, "
        f"{summary.throttled} throttled; rate limit {summary.rate_limit}, "
        f"concurrency {summary.concurrency}."
    )
    if summary.interrupted or _left(summary):
        console.print(_stop_line(summary))
    if summary.results:
        console.print(f"Results: {summary.results}")  # the one place it is printed
    return buffer.getvalue()


def _left(summary: BulkSummary) -> str | None:
    """What a resume has left to do, in words (``1 applicant(s) pending and 2 not started``),
    or ``None`` when nothing is known to be left."""
    parts = [f"{summary.pending} applicant(s) pending"] if summary.pending else []
    if summary.not_started:
        noun = "" if parts else " applicant(s)"
        parts.append(f"{summary.not_started}{noun} not started")
    if not summary.total_known:
        parts.append("an unknown number of rows not started")
    return " and ".join(parts) or None


def _stop_line(summary: BulkSummary) -> str:
    """Why the job ended before its end, and what a resume has left to do."""
    left = _left(summary)
    if not summary.interrupted:
        return f"{left}; run again with resume."
    reason = f" ({summary.stop_reason})" if summary.stop_reason else ""
    if left is None:  # the stop came after the last row finished
        return f"Stopped early{reason}, after every row had finished: nothing is left to do."
    fix = "fix that, then " if summary.stopped_by_error else ""
    return f"Stopped early{reason}: {left}; {fix}run again with resume to finish them."


def explain_error(key: str) -> str:
    """What an Errors-table key means: a documented error code's meaning (3010: the document
    has expired, from :func:`vlens_async.errors.describe_code`), or the first paragraph of an
    error class's description, as plain text (no reStructuredText markup)."""
    if key.isdigit():
        return errors.describe_code(int(key)) or "an error code the API documents no meaning for"
    cls = getattr(errors, key, None)
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__doc__:
        return _plain_text(cls.__doc__.strip().split("\n\n")[0])
    return "an unexpected error (see the log)"


# A Sphinx role (:class:`~vlens_async.Transaction`, :meth:`restore`) and a literal (``x``).
_ROLE: Final = re.compile(r":(\w+):`(~?)([^`]+)`")
_LITERAL: Final = re.compile(r"``([^`]+)``")


def _role(match: re.Match[str]) -> str:
    role, short, target = match.groups()
    text = target.rsplit(".", 1)[-1] if short else target
    return f"{text}()" if role in ("meth", "func") else text


def _plain_text(text: str) -> str:
    """Docstring text as a terminal shows it: roles become their name as Sphinx renders it
    (``:class:`~a.B``` is ``B``, a method gets ``()``), literals lose their double backticks,
    and line breaks and indentation become single spaces."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"\1", text)
    return " ".join(text.split())
