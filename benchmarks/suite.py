"""What a row of the suite is, and what it is given: the data, the size of the run, its rounds and their time budget.

A row is one function ``row(context) -> dict`` (made with ``report.row``, its prose from a
``report.RowText`` kept beside it), listed in ``benchmarks/run.py``'s ROWS with the seconds its
rounds take on a quiet 2-core machine. Each row picks its own sizes with
:attr:`Context.size` (the full suite's or ``--quick``'s) and times its measurements with
:meth:`Context.rounds`.
"""

import dataclasses
from typing import Callable, Optional

from benchmarks import measure


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of the suite and the seconds its rounds take on a quiet 2-core machine (kept for it by earlier rows)."""

    measure: Callable[["Context"], dict]
    quiet_seconds: float


@dataclasses.dataclass(frozen=True)
class Policy:
    """How rounds are repeated: the rounds every row runs, and the disturbed rounds that may be replaced."""

    rounds: int  # rounds every measurement runs, whatever the time budget
    cheap_rounds: int  # the same for measurements whose round takes a few seconds
    max_extra_rounds: int  # rounds that may replace disturbed ones, while the time budget allows
    quiet_wait: float  # seconds to wait for a quiet machine before a round


@dataclasses.dataclass
class Context:
    """What a row measures on: the run's data and folders, the rows measured before it, and its time budget."""

    quick: bool
    policy: Policy
    output_dir: str  # scratch for every row
    photos_dir: str  # the generated photo-like JPEGs, in class folders
    large_photos_dir: Optional[str]  # hard-linked copies of them for row 1's memory comparison; None in --quick
    records_dir: str  # the records row 1 converts and later rows read
    done: list = dataclasses.field(default_factory=list)  # rows measured so far
    budget: measure.Budget = None  # when this row must stop adding rounds, set before each row
    log: Callable = print

    @property
    def size(self) -> str:
        """"quick" in a --quick run, else "full": the key of a row's sizes, e.g. ``STEPS[context.size]``."""
        return "quick" if self.quick else "full"

    def rounds(self, measurements: dict, count: int = None) -> list:
        """measure.rounds of ``measurements``: ``count`` rounds (the policy's by default) within this row's budget."""
        return measure.rounds(measurements, count or self.policy.rounds, self.budget,
                              max_extra=self.policy.max_extra_rounds, quiet_wait=self.policy.quiet_wait, log=self.log)

    def figure(self, row_id: str, name: str):
        """A figure of a row measured earlier in this run."""
        return next(row for row in self.done if row["id"] == row_id)["figures"][name]
