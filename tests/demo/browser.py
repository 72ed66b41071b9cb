"""Headless Chromium for tests: installed on demand by scripts/install-chromium.sh."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import need

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-chromium.sh"
RUN_TIMEOUT = 90.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary; installs it when missing (as root), else skips the test with the reason
    (or fails it under CONVEYOR_REQUIRE_SERVICES=1)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0:
        result = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium")
        how = f"{INSTALL_SCRIPT.name} failed: {result.stderr.strip()[-300:]}"
    else:
        how = f"run {INSTALL_SCRIPT.relative_to(ROOT)} as root (apt-get install chromium)"
    need("headless Chromium", found is not None, how)
    assert found is not None
    return found


async def run(binary: str, url: str, *args: str) -> bytes:
    """Run Chromium on `url` with a throwaway profile; returns its stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            *args,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"chromium exited with {process.returncode}: {stderr.decode()[-2000:]}")
        return stdout


async def dump_dom(binary: str, url: str) -> str:
    """The DOM after the page loaded and its scripts ran, serialised."""
    return (await run(binary, url, "--dump-dom")).decode()


async def screenshot(
    binary: str, url: str, png: Path, *, width: int = 1280, height: int = 1600, scale: float = 1.0
) -> None:
    await run(
        binary,
        url,
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        f"--force-device-scale-factor={scale}",
    )
