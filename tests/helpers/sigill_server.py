#!/usr/bin/env python3
"""A test server that dies of SIGILL while starting, on purpose: it stands for a llama.cpp
build that runs an instruction this CPU (or kernel) does not allow, which cannot be produced on
cue with a real build on a machine whose CPU runs every instruction it was built for.

It accepts any command line (llama-server's or llama-completion's), prints a log line like an
engine, then kills itself with signal 4."""

import os
import signal
import sys
import time

print(f"sigill test server: pid {os.getpid()}, argv {' '.join(sys.argv[1:])[:200]}", flush=True)
time.sleep(0.2)
signal.signal(signal.SIGILL, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGILL)
time.sleep(5)
sys.exit(1)
