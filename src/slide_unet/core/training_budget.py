"""The clock of a training run with a time budget: stop stepping in time to finish in time.

A run does work after its last step: it re-estimates batch-norm statistics,
validates, writes its resumable state, and saves the model (fine-tuning saves
it once more with the base model's Dice). Stopping the steps only when the
budget is spent and then doing that work overshoots by a step plus all of it
(a 90 s fine-tuning ran 129 s). :class:`TimeBudget` starts a step only when the
step and the work after it, as measured so far in this run and with a margin,
end before the deadline.

What it promises: the run ends within the budget unless a step or the wrap-up
takes longer than the margin allows (a busy machine); the overshoot is then a
fraction of one step and one wrap-up, not all of them.

This module is part of the napari-free core.
"""

from __future__ import annotations

import time

__all__ = ["MARGIN", "TimeBudget"]

#: Safety factor on the measured durations: steps and validations vary a little
#: from one to the next (other work on the machine, patch contents).
MARGIN = 1.25

#: A no-gradient forward batch (batch-norm re-estimation) as a share of a
#: training step (forward, backward, optimiser): a guess until one is measured.
FORWARD_SHARE = 0.5


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
        statistics (part of the wrap-up guessed before one is measured).
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
        self.validation = 0.0  # the last validation alone (no re-estimation)
        self.wrap_up = 0.0  # the last measured end of an epoch, all of it
        self.save = 0.0  # the last state save, as a guess for the final saves
        self._recent: list[float] = []

    def elapsed(self) -> float:
        """Seconds spent so far (earlier runs included)."""
        return self.spent + time.perf_counter() - self.started

    def reserve(self) -> float:
        """Seconds to keep for the end of the run: the epoch's wrap-up and the saves."""
        wrap_up = self.wrap_up or self.validation + self.norm_batches * self.step * FORWARD_SHARE
        return MARGIN * (wrap_up + self.save)

    def room_for_step(self) -> bool:
        """Whether one more step and the wrap-up after it fit in the budget."""
        if self.seconds is None:
            return True
        return self.elapsed() + MARGIN * self.step + self.reserve() < self.seconds

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

    def note_validation(self, seconds: float) -> None:
        """Record how long a validation alone took (the base model's, before training)."""
        self.validation = seconds

    def note_wrap_up(self, seconds: float, save: float) -> None:
        """Record how long the end of an epoch took, and the state save within it."""
        self.wrap_up, self.save = seconds, save
