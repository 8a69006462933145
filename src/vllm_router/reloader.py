"""`run --reload`: for development, runs the router in a child process and restarts it when a
Python file of the package (or the compiled module) changes. The child gets the same command
line without --reload.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0


def _snapshot(root: Path) -> dict[Path, float]:
    files = list(root.rglob("*.py")) + list(root.glob("_core*.so"))
    return {f: f.stat().st_mtime for f in files if f.exists()}


def run_with_reloader() -> int:
    root = Path(__file__).resolve().parent
    argv = [a for a in sys.argv[1:] if a != "--reload"]
    command = [sys.executable, "-m", "vllm_router", *argv]
    while True:
        seen = _snapshot(root)
        child = subprocess.Popen(command)
        try:
            while child.poll() is None:
                time.sleep(POLL_S)
                if _snapshot(root) != seen:
                    print("vllm-router: code changed, restarting", file=sys.stderr)
                    child.terminate()
                    child.wait()
                    break
            else:
                return child.returncode
        except KeyboardInterrupt:
            child.terminate()
            return child.wait()
