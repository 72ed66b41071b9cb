"""The browser tests never install Chromium: without it they skip naming the install command, and
under CONVEYOR_REQUIRE_SERVICES=1 they fail with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import chromium


def test_a_missing_chromium_skips_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no chromium, no apt-get
    monkeypatch.delenv("CONVEYOR_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"sudo sh scripts/install-chromium\.sh"):
        chromium()


def test_a_missing_chromium_fails_when_services_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CONVEYOR_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=r"sudo sh scripts/install-chromium\.sh"):
        chromium()
