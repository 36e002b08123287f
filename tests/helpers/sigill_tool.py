#!/usr/bin/env python3
"""A stand-in for a llama.cpp one-shot tool (llama-completion, llama-cli) that misbehaves on
purpose: it prints a log line, then kills itself with SIGILL, as a build that uses CPU
instructions this machine lacks does on its first such instruction. A real build cannot be
made to do that on cue on a CPU that runs every instruction it was built for.

Tests install it under the tool's name (``llama-completion``) beside a profile's `binary:`."""

import os
import signal
import sys

print(f"sigill test tool: pid {os.getpid()}, {len(sys.argv) - 1} arguments", file=sys.stderr, flush=True)
signal.signal(signal.SIGILL, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGILL)
sys.exit(1)  # not reached
