"""The clock of a training run with a time budget: stop stepping in time to finish in time.

A run does work after its last step: it re-estimates batch-norm statistics,
validates, writes its resumable state, and saves the model (fine-tuning saves
it once more with the base model's Dice). Stopping the steps only when the
budget is spent and then doing that work overshoots by a step plus all of it
(a 90 s fine-tuning ran 129 s on a busy 2-core CPU, where re-estimating the
batch norms alone can take half a minute). :class:`TimeBudget` starts a step
only when the step and the work after it, with a margin, end before the
deadline.

What it plans with: the slowest of the last few steps; the end of the last
epoch as measured; before the first epoch has ended, one re-estimation batch
timed on its own times the number of batches, plus the base model's
validation (fine-tuning; training from scratch has none to time, so its first
epoch may overrun by one validation).

What it promises: the run ends within the budget unless a step or the end of
an epoch takes longer than planned (the machine got busier); the overshoot is
then the difference.

This module is part of the napari-free core.
"""

from __future__ import annotations

import time

__all__ = ["MARGIN", "TimeBudget"]

#: Safety factor on the measured durations: steps and validations vary a little
#: from one to the next (other work on the machine, patch contents).
MARGIN = 1.25


class TimeBudget:
    """When to stop taking steps so that a run with a time budget ends in time.

    Parameters
    ----------
    seconds : float or None
        The budget; None: no time limit (every query says there is room).
    started : float
        :func:`time.perf_counter` when the budget began (loading counts).
    spent : float
        Seconds spent before ``started`` (a resumed run).
    norm_batches : int
        Forward batches run before each validation to re-estimate batch-norm
        statistics: until a whole wrap-up is measured, it is planned as that
        many times :meth:`note_norm_batch`'s batch plus the last validation.
    """

    def __init__(
        self,
        seconds: float | None,
        started: float,
        spent: float = 0.0,
        norm_batches: int = 0,
    ) -> None:
        self.seconds = seconds
        self.started = started
        self.spent = spent
        self.norm_batches = norm_batches
        self.step = 0.0  # the longest of the recent steps
        self.norm_batch = 0.0  # one batch of the batch-norm re-estimation
        self.validation = 0.0  # the last validation alone (no re-estimation)
        self.wrap_up = 0.0  # the last measured end of an epoch, all of it
        self.save = 0.0  # the last state save, as a guess for the final saves
        self._recent: list[float] = []

    def elapsed(self) -> float:
        """Seconds spent so far (earlier runs included)."""
        return self.spent + time.perf_counter() - self.started

    def reserve(self) -> float:
        """Seconds to keep for the end of the run: the epoch's wrap-up and the saves."""
        wrap_up = self.wrap_up or self.validation + self.norm_batches * self.norm_batch
        return MARGIN * (wrap_up + self.save)

    def room_for_steps(self, steps: int = 1) -> bool:
        """Whether ``steps`` more steps and the wrap-up after them fit in the budget."""
        if self.seconds is None:
            return True
        return self.elapsed() + MARGIN * self.step * steps + self.reserve() < self.seconds

    def fraction(self) -> float:
        """How far the run is through the time it may spend on steps, 0 to 1 (0
        without a budget): what the learning-rate schedule follows."""
        if self.seconds is None:
            return 0.0
        stepping = max(self.seconds - self.reserve(), 1e-9)
        return min(1.0, self.elapsed() / stepping)

    def note_step(self, seconds: float) -> None:
        """Record how long a step took (the longest of the last few is planned for)."""
        self._recent = [*self._recent[-4:], seconds]
        self.step = max(self._recent)

    def note_norm_batch(self, seconds: float) -> None:
        """Record how long one batch of the batch-norm re-estimation took."""
        self.norm_batch = seconds

    def note_validation(self, seconds: float) -> None:
        """Record how long a validation alone took (the base model's, before training)."""
        self.validation = seconds

    def note_wrap_up(self, seconds: float, save: float) -> None:
        """Record how long the end of an epoch took, and the state save within it."""
        self.wrap_up, self.save = seconds, save
