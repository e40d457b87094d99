"""Take a PNG of the sandbox playground with headless Chromium.

    python scripts/screenshot_playground.py http://127.0.0.1:8081 docs/playground.png

Point it at a running sandbox that already holds a conversation (the playground shows the
first user's chat and the newest topic of the first support group).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the sandbox root, e.g. http://127.0.0.1:8081")
    parser.add_argument("output", help="where to write the PNG")
    parser.add_argument("--size", default="1400,860", help="window size WIDTH,HEIGHT")
    parser.add_argument("--browser", default=None, help="chromium binary (default: search PATH)")
    args = parser.parse_args()
    browser = args.browser or next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        print("no chromium found (apt-get install -y chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # runs as root in containers
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            # Lets the page's polling fetch and draw before the picture is taken.
            "--virtual-time-budget=4000",
            f"--window-size={args.size}",
            f"--screenshot={args.output}",
            args.url.rstrip("/") + "/",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
