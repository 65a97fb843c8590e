"""The decode budget: refused over it, with what was asked and how to raise it."""

from __future__ import annotations

import pytest

from slide_unet.core.errors import LimitError
from slide_unet.core.limits import DEFAULT_BUDGET_MB, MEMORY_BUDGET_ENV, check_decode


def test_over_the_budget_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    check_decode(DEFAULT_BUDGET_MB * 2**20, "just fits")
    with pytest.raises(LimitError, match=MEMORY_BUDGET_ENV) as caught:
        check_decode(50_000 * 50_000 * 3, "bomb.png: a 50000 x 50000 RGB image")
    assert "bomb.png" in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "lots"])
def test_a_bad_budget_variable_is_a_clear_error(value: str, monkeypatch) -> None:
    monkeypatch.setenv(MEMORY_BUDGET_ENV, value)
    with pytest.raises(LimitError, match="positive number of MB"):
        check_decode(1, "anything")


def test_the_variable_raises_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "20000")
    check_decode(10_000 * 2**20, "a big strip")
    with pytest.raises(LimitError):
        check_decode(float("nan"), "an unknown size")
