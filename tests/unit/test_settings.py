"""Settings: the documented special values of RAINCAST_* variables are accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raincast.settings import Settings


def test_a_poll_interval_of_zero_means_no_polling_and_a_negative_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAINCAST_API_POLL_S", "0")  # .env.example: 0 = only /admin/reload
    assert Settings(_env_file=None).api_poll_s == 0
    monkeypatch.setenv("RAINCAST_API_POLL_S", "-1")
    with pytest.raises(ValidationError, match="api_poll_s"):
        Settings(_env_file=None)
