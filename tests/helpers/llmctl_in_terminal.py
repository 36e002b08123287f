"""Run the real `llmctl` (arguments as given) with Ctrl-C as it is in a terminal: SIGINT's
default action, even when the test run itself ignores SIGINT (a background job does, and its
children inherit that), so that a test sees the exit status a user sees.

    python llmctl_in_terminal.py serve --port 8800
"""

from __future__ import annotations

import runpy
import signal
import sys

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv[0] = "llmctl"
    runpy.run_module("llmctl", run_name="__main__", alter_sys=True)
