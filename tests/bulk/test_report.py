"""Progress reporters and the summary table."""

from __future__ import annotations

import io
import re

from rich.console import Console

from vlens_async.bulk import (
    BulkSummary,
    PlainProgress,
    ProgressStats,
    RichProgress,
    format_summary,
    make_progress,
)
from vlens_async.bulk._journal import LatencyStats


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def summary(**overrides: object) -> BulkSummary:
    """A summary of a small finished job."""
    fields: dict[str, object] = {
        "total": 12,
        "by_outcome": {"verified": 8, "rejected": 2, "error": 1, "invalid": 1},
        "by_error": {"3010": 1, "3101": 1, "InternalServerError": 1},
        "processed": 11,
        "skipped": 0,
        "resumed": 0,
        "elapsed": 3.5,
        "throughput": 11 / 3.5,
        "latency": {"front": LatencyStats(11, 0.201, 0.250, 0.312)},
        "requests": 34,
        "throttled": 2,
        "rate_limit": "10/s,60/min",
        "concurrency": 16,
        "results": "out.jsonl",
    }
    fields.update(overrides)
    return BulkSummary(**fields)  # type: ignore[arg-type]


def test_plain_progress_prints_periodic_lines() -> None:
    """Off a terminal: a line at start, at most one per interval, and one at the end."""
    out = io.StringIO()
    progress = PlainProgress(out, interval=3600)
    progress.start(100)
    stats = ProgressStats(
        done=40,
        failed=3,
        skipped=10,
        total=100,
        elapsed=20.0,
        by_outcome={"verified": 37, "rejected": 3},
    )
    progress.update(stats)  # inside the interval: nothing
    progress.close(stats)
    lines = out.getvalue().splitlines()
    assert lines[0] == "bulk: 100 row(s), 0 already finished"
    assert len(lines) == 2
    assert "done 50/100 (50%): verified 37, rejected 3; skipped 10; rate 2.0/s" in lines[1]
    assert lines[1].endswith("eta 0:25")


def test_make_progress_picks_a_bar_only_on_a_terminal() -> None:
    """make_progress gives a rich bar on a TTY and plain lines elsewhere."""
    assert isinstance(make_progress(io.StringIO()), PlainProgress)
    tty = FakeTTY()
    bar = make_progress(tty)
    assert isinstance(bar, RichProgress)
    bar.start(10)
    bar.update(ProgressStats(done=5, failed=1, skipped=0, total=10, elapsed=1.0))
    bar.close(ProgressStats(done=10, failed=1, skipped=0, total=10, elapsed=2.0))
    assert "10/10" in tty.getvalue()


def test_format_summary_shows_outcomes_errors_latency_and_throughput() -> None:
    """The summary table lists every outcome, every error key, per-endpoint percentiles."""
    text = format_summary(summary())
    for needle in ("verified", "rejected", "invalid", "3010", "InternalServerError", "front"):
        assert needle in text
    assert "312" in text  # p99 in ms
    assert "3.14 applicants/s" in text
    assert "Stopped early" not in text
    stopped = format_summary(
        summary(by_outcome={"verified": 2, "pending": 3}, interrupted=True, stop_reason="SIGINT")
    )
    assert "Stopped early (SIGINT): 3 applicant(s) pending" in stopped


def test_summary_properties_and_json() -> None:
    """pending, failed and complete are derived from the counts; to_json is plain data."""
    s = summary(by_outcome={"verified": 2, "rejected": 1, "pending": 3})
    assert (s.pending, s.failed, s.complete) == (3, 1, False)
    data = s.to_json()
    assert data["latency"]["front"]["p99"] == 0.312
    assert data["pending"] == 3
    assert summary().complete


def test_progress_and_summary_use_one_vocabulary() -> None:
    """The progress line names outcomes as the summary does (no "failed" where the summary says
    "rejected"), needs review included."""
    by_outcome = {"verified": 8, "rejected": 59, "error": 1}
    stats = ProgressStats(
        done=68, failed=60, skipped=0, total=68, elapsed=1.0, by_outcome=by_outcome, needs_review=2
    )
    out = io.StringIO()
    PlainProgress(out).close(stats)
    line = out.getvalue()
    assert not re.search(r"failed \d", line)
    assert "rejected 59" in line
    assert "needs review 2" in line
    text = format_summary(summary(by_outcome=by_outcome, needs_review=2))
    assert not re.search(r"failed \d", text)
    assert "rejected" in text
    assert "Needs review: 2" in text
    tty = FakeTTY()
    bar = RichProgress(Console(file=tty, width=200))
    bar.start(68)
    bar.close(stats)
    assert "rejected 59" in tty.getvalue()
    assert not re.search(r"failed \d", tty.getvalue())


def test_summary_explains_the_error_codes_it_lists() -> None:
    """Each error code in the summary comes with its meaning (3010: expired), each class with
    its description."""
    text = format_summary(summary(by_error={"3010": 2, "4207": 1, "APIConnectionError": 1}))
    assert "the document has expired" in text
    assert "no face found" in text
    assert "No usable response" in text


def test_the_errors_table_shows_no_markup() -> None:
    """Error classes are explained in plain words: no double backticks, roles or indentation
    from their docstrings."""
    keys = ["ClientClosedError", "DocumentError", "MissingInputError", "ResponseTooLargeError"]
    text = format_summary(summary(by_error=dict.fromkeys(keys, 1)), width=400)
    assert "outside async with or after" in text
    assert "(and 7001-7002, WrongSideError): the ID document is invalid, unreadable" in text
    assert '"id_front" for liveness after restore(), "name_check_value"' in text
    assert "`" not in text
    assert ":class:" not in text
    assert ":meth:" not in text


def test_results_path_is_printed_once() -> None:
    """The summary names the results file once."""
    text = format_summary(summary(results="out.jsonl", journal="run.db"))
    assert text.count("out.jsonl") == 1


def flat(summary: BulkSummary) -> str:
    """The printed summary on one line (the table wraps long sentences)."""
    return " ".join(format_summary(summary, width=200).split())


def test_a_stopped_summary_says_what_is_pending_and_what_was_never_started() -> None:
    """Rows never reached count in the total and are said; no "0 pending" next to "run again"."""
    stopped = {"interrupted": True, "stop_reason": "SIGINT received", "total": 5}
    both = summary(by_outcome={"verified": 1, "pending": 1}, not_started=3, **stopped)
    assert (both.pending, both.not_started, both.complete) == (1, 3, False)
    assert both.to_json()["not_started"] == 3
    text = flat(both)
    assert re.search(r"not started │ 3 │ │ total │ 5 │", text)
    assert (
        "Stopped early (SIGINT received): 1 applicant(s) pending and 3 not started;"
        " run again with resume to finish them." in text
    )
    only = flat(summary(by_outcome={"verified": 2}, not_started=3, **stopped))
    assert "Stopped early (SIGINT received): 3 applicant(s) not started; run again" in only
    assert "pending" not in only
    # Not interrupted, yet rows left (a resume that was given a shorter manifest, say).
    left = summary(by_outcome={"verified": 2}, total=5, not_started=3)
    assert not left.complete
    assert "3 applicant(s) not started; run again with resume." in flat(left)


def test_a_summary_of_unknown_length_says_only_what_is_known() -> None:
    """An iterable stopped before its end: the rows reached, "or more", an unknown rest."""
    s = summary(
        total=2, by_outcome={"verified": 2}, total_known=False, interrupted=True, stop_reason="x"
    )
    assert not s.complete
    text = flat(s)
    assert re.search(r"not started │ unknown │ │ total │ 2 or more │", text)
    assert "Stopped early (x): an unknown number of rows not started; run again" in text


def test_a_stop_after_every_row_finished_asks_for_no_resume() -> None:
    """Nothing pending, nothing not started: the stop line says nothing is left."""
    text = flat(summary(interrupted=True, stop_reason="SIGINT received"))
    assert "Stopped early (SIGINT received), after every row had finished" in text
    assert "run again" not in text


def test_a_stopped_jobs_last_progress_line_gives_no_eta() -> None:
    """Stopped early, the closing line says so instead of an ETA for rows nobody is working on;
    a running job's line keeps its ETA."""
    running = ProgressStats(done=4, failed=0, skipped=0, total=10, elapsed=2.0)
    stopped = ProgressStats(done=4, failed=0, skipped=0, total=10, elapsed=2.0, stopped=True)
    assert running.eta == 3.0
    assert stopped.eta is None
    out = io.StringIO()
    PlainProgress(out).close(stopped)
    assert out.getvalue().rstrip().endswith("elapsed 0:02; stopped")
    out = io.StringIO()
    PlainProgress(out).close(running)
    assert out.getvalue().rstrip().endswith("elapsed 0:02; eta 0:03")
