"""Run core work in a background thread with a napari progress bar and Cancel.

Core functions take plain callbacks: ``progress(done, total)`` and a cancel
check (a ``threading.Event`` or a callable). :func:`start_job` runs one in a
napari worker thread and turns those callbacks into Qt signals, which Qt
delivers on the main thread: the progress bar (with napari's own Cancel
button in the activity dock) moves, partial results can be shown as they come,
and the viewer stays responsive. ``errored`` is always connected: an error
becomes a napari notification, never a traceback in a dialog.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal

from slide_unet.core.errors import Cancelled, UserError

__all__ = ["Job", "notify_error", "report_bug", "start_job"]

#: Work run by a job: ``work(progress, cancel, partial)``; ``partial(value)``
#: sends a value to the main thread (e.g. a finished region to refresh).
Work = Callable[[Callable[[int, int], None], threading.Event, Callable[[Any], None]], Any]


def failure_text(error: BaseException, cancelled: str) -> str:
    """A widget's status line for a job that ended with ``error``: ``cancelled`` when the
    user cancelled it, else ``failed: <error>``."""
    return cancelled if isinstance(error, Cancelled) else f"failed: {error}"


def notify_error(error: BaseException) -> None:
    """Show an error as one napari notification.

    A user's error (:class:`~slide_unet.core.errors.UserError`, or the file
    system's :class:`OSError`) is its one line. Anything else is a bug: the
    notification says so and asks for a report, and keeps the traceback (napari's
    *View Traceback*), which is printed to the terminal too.
    """
    if isinstance(error, Cancelled):
        return
    if isinstance(error, UserError | OSError):
        show_error(str(error) or type(error).__name__)
        return
    report_bug(error)


def report_bug(error: BaseException) -> None:
    """Tell the user that ``error`` is a bug, with its traceback, and ask for a report."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    from slide_unet import __version__

    traceback.print_exception(error)
    notification = ErrorNotification(error)
    notification.message = (
        f"{type(error).__name__}: {error}. This is a bug in napari-slide-unet {__version__}, "
        "not something wrong with your data: please report it to its maintainers with the "
        "traceback (View Traceback)"
    )
    notification_manager.dispatch(notification)


#: Shortest time between two values shown on napari's progress bar (s): in the
#: first :data:`SETTLE_SECONDS` of a job, and after (a long job's bar needs less).
PROGRESS_SECONDS = 1.0
LATE_PROGRESS_SECONDS = 2.0
SETTLE_SECONDS = 10.0
_held: list[Any] = []  # jobs running with napari's activity spinner held still


def _activity_spinners() -> list[Any]:
    """The animated labels (QMovie) in the status bars of the open main windows."""
    from qtpy.QtWidgets import QApplication, QLabel, QMainWindow, QStatusBar

    movies = []
    for window in QApplication.topLevelWidgets():
        if isinstance(window, QMainWindow):
            for bar in window.findChildren(QStatusBar):
                movies += [label.movie() for label in bar.findChildren(QLabel) if label.movie()]
    return movies


def _hold_spinner(job: Any) -> None:
    """Hold napari's activity spinner still while ``job`` runs.

    The spinner is a GIF in the status bar that plays at about 30 frames a
    second while any progress bar is open. Without a GPU (software OpenGL:
    virtual machines, remote desktops, Xvfb) each frame recomposites the whole
    window: measured, that took 40 % of an 8,192² Segment run on 2 cores, and
    still 10 % at a tenth of the speed. Held, it still shows that something
    runs; the bar beside it shows how far.
    """
    _held.append(job)
    for movie in _activity_spinners():
        movie.setPaused(True)


def _release_spinner(job: Any) -> None:
    if job in _held:
        _held.remove(job)
    if not _held:
        for movie in _activity_spinners():
            movie.setPaused(False)


_frozen: list[Any] = []  # jobs running with napari's objects out of the GC's reach


def _freeze_gc(job: Any) -> None:
    """Keep the objects alive now (napari's, Qt's: most of the process) out of
    Python's full collections while ``job`` runs.

    A full collection holds the GIL while it walks every object, and the
    worker's allocations start one now and then: measured, 231 ms in which the
    window could not repaint during a whole-slide run. Frozen objects are only
    skipped, never lost: :func:`_thaw_gc` hands them back when the last job ends.
    """
    if not _frozen:
        gc.freeze()
    _frozen.append(job)


def _thaw_gc(job: Any) -> None:
    if job in _frozen:
        _frozen.remove(job)
        if not _frozen:
            gc.unfreeze()


class _Signals(QObject):
    progress = Signal(int, int)
    partial = Signal(object)


class Job:
    """A running background job: its worker, progress bar and cancel flag.

    Attributes
    ----------
    worker : napari FunctionWorker
        Its ``returned``, ``errored`` and ``finished`` signals are what tests
        and callers wait on.
    cancelled : threading.Event
        Set by :meth:`cancel` or by the progress bar's Cancel button.
    """

    def __init__(self, work: Work, description: str) -> None:
        self.cancelled = threading.Event()
        self.description = description
        self.signals = _Signals()
        self.bar: Any = None  # napari's progress bar, shown by start()
        self.signals.progress.connect(self._show_progress)
        self._latest: tuple[int, int] | None = None
        self._shown_at = 0.0
        self._started = time.monotonic()
        self._later = QTimer()
        self._later.setSingleShot(True)
        self._later.setInterval(int(PROGRESS_SECONDS * 1000))
        self._later.timeout.connect(self._apply_progress)
        self.worker = create_worker(
            work,
            self.signals.progress.emit,
            self.cancelled,
            self.signals.partial.emit,
            _start_thread=False,
            # Errors become one notification (below), not a re-raise on the
            # main thread, which would abort a bare Qt process.
            _ignore_errors=True,
        )
        self.worker.errored.connect(notify_error)
        # napari's Cancel in the activity dock only flags the bar: look for it
        # between progress reports too, so a job that reports rarely stops soon.
        self._watch = QTimer()
        self._watch.setInterval(200)
        self._watch.timeout.connect(self._check_bar)
        self.worker.started.connect(self._watch.start)
        self.worker.finished.connect(self._watch.stop)

    def start(self) -> None:
        """Show napari's progress bar, then start the work."""
        self.bar = cancelable_progress(
            total=0, desc=self.description, cancel_callback=self.cancelled.set
        )
        self.worker.finished.connect(self._apply_progress)  # the last report, then close
        self.worker.finished.connect(self.bar.close)
        _hold_spinner(self)
        self.worker.finished.connect(lambda: _release_spinner(self))
        _freeze_gc(self)
        self.worker.finished.connect(lambda: _thaw_gc(self))
        self.worker.start()

    def _check_bar(self) -> None:
        if self.bar is not None and self.bar.is_canceled:
            self.cancelled.set()

    def _show_progress(self, done: int, total: int) -> None:
        """Take a progress report; show it now, or the latest one a little later.

        napari's bar runs a nested event loop (and so a repaint of the window)
        on every value it shows: at a block a second or more that cost an
        8,192² Segment run a tenth of its time without a GPU. Reports closer
        than :data:`PROGRESS_SECONDS` (later :data:`LATE_PROGRESS_SECONDS`) are
        merged; a new total and the last report are shown at once.
        """
        if self.bar is None:
            return
        if self.bar.is_canceled:  # napari's Cancel button in the activity dock
            self.cancelled.set()
        self._latest = (done, total)
        now = time.monotonic()
        late = now - self._started >= SETTLE_SECONDS
        interval = LATE_PROGRESS_SECONDS if late else PROGRESS_SECONDS
        self._later.setInterval(int(interval * 1000))
        due = now - self._shown_at >= interval
        if due or done >= total or total != self.bar.total:
            self._apply_progress()
        elif not self._later.isActive():
            self._later.start()

    def _apply_progress(self) -> None:
        self._later.stop()
        if self.bar is None or self._latest is None:
            return
        done, total = self._latest
        if self.bar.total != total:
            # A new total restarts tqdm's rate estimate (a later phase, or the
            # engine's block count after planning): the ETA is of this phase.
            self.bar.reset(total)
        # update() is what moves napari's bar (its value event) and, through
        # tqdm's display, its ETA label; setting ``n`` alone shows neither.
        self.bar.update(done - self.bar.n)
        self._shown_at = time.monotonic()

    def cancel(self) -> None:
        """Ask the work to stop at its next cancel check."""
        self.cancelled.set()

    @property
    def running(self) -> bool:
        return self.worker.is_running


def start_job(
    work: Work,
    description: str,
    *,
    done: Callable[[Any], None] | None = None,
    partial: Callable[[Any], None] | None = None,
    failed: Callable[[BaseException], None] | None = None,
    finished: Callable[[], None] | None = None,
) -> Job:
    """Start ``work`` in a background thread and return its :class:`Job`.

    Parameters
    ----------
    work : callable
        ``work(progress, cancel, partial)``: ``progress(done, total)`` moves the
        bar, ``cancel`` is a ``threading.Event`` to pass to core functions,
        ``partial(value)`` delivers ``value`` to the ``partial`` callback on the
        main thread.
    description : str
        The progress bar's label.
    done, partial, failed, finished : callable, optional
        Called on the main thread with the result, each partial value, the
        error (after the notification), and at the end whatever happened.
    """
    job = Job(work, description)
    if done is not None:
        job.worker.returned.connect(done)
    if partial is not None:
        job.signals.partial.connect(partial)
    if failed is not None:
        job.worker.errored.connect(failed)
    if finished is not None:
        job.worker.finished.connect(finished)
    job.start()
    return job
