"""In napari, a user's error is one line; a bug says so and keeps its traceback."""

from __future__ import annotations

import pytest
from napari.utils.notifications import ErrorNotification, notification_manager

from slide_unet.core.errors import LimitError, StoreBusyError
from slide_unet.napari import jobs as _jobs


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The one-line error notifications shown."""
    lines: list[str] = []
    monkeypatch.setattr(_jobs, "show_error", lines.append)
    return lines


def _bug_reports() -> list[ErrorNotification]:
    return [n for n in notification_manager.records if isinstance(n, ErrorNotification)]


@pytest.mark.parametrize(
    "error",
    [LimitError("slide.png: 50000 x 50000 is over the budget"), StoreBusyError("in use by 7")],
)
def test_a_users_error_is_its_one_line(shown, error) -> None:
    before = len(_bug_reports())
    _jobs.notify_error(error)
    assert shown == [str(error)]
    assert len(_bug_reports()) == before


def test_a_file_system_error_is_its_one_line(shown) -> None:
    _jobs.notify_error(PermissionError(13, "Permission denied", "/slides/mask.tif"))
    assert shown == ["[Errno 13] Permission denied: '/slides/mask.tif'"]


def test_a_bug_in_a_job_asks_for_a_report_and_keeps_its_traceback(
    viewer, qtbot, shown, capsys
) -> None:

    def work(progress, cancel, partial):
        progress(1, 4)
        return {"a": 1}["missing"]  # a bug: a KeyError no user can put right

    before = len(_bug_reports())
    _jobs.start_job(work, "Buggy job")  # may be over before this line returns
    qtbot.waitUntil(lambda: len(_bug_reports()) > before, timeout=10_000)
    reports = _bug_reports()[before:]
    assert shown == []  # not passed off as a one-line user error
    assert len(reports) == 1
    assert isinstance(reports[0].exception, KeyError)
    assert "This is a bug in napari-slide-unet" in reports[0].message
    assert "please report it" in reports[0].message
    text = reports[0].as_text()
    assert "KeyError" in text
    assert '["missing"]' in text  # the traceback reaches the line in the job
    assert "Traceback" in capsys.readouterr().err  # and the terminal has it too
