"""`llmctl export systemd`: a user unit per profile, ``llmctl-NAME.service``; ``--install`` writes
them to ``$XDG_CONFIG_HOME/systemd/user``.

The keeper stays in front: the unit runs `llmctl up NAME` when it starts and `llmctl down NAME`
when it stops (``Type=oneshot`` with ``RemainAfterExit``), and llmctl's keeper supervises the
server as after any `up`. Why not systemd's own ``Restart=`` on the engine:

- one restart policy, the profile's: a delay doubling from ``restart_delay`` to
  ``restart_delay_max``, ``failed`` after ``crash_limit`` deaths in ``crash_window``, restarts
  of an unhealthy server (``restart_unhealthy``). ``Restart=`` sees exits only, never health, and
  the systemd of Debian 12 (252) has no growing delay (``RestartSteps=`` came in 254);
- `llmctl status`, `logs`, `down`, `run` and `serve` see the server as one of theirs;
- one unit for every engine and launcher (native or docker).

systemd's part: start the server at login (at boot with ``loginctl enable-linger``), stop it at
logout or shutdown, and hold the keeper and the server in the unit's control group, so that
stopping the unit leaves no process behind even if `down` could not finish.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..paths import Paths
from ..profiles.schema import Config, Profile
from .common import ExportFile, Options, header, said, seconds, servers

MARGIN = 60  #: seconds granted beyond the profile's own timeouts (the CLI's start, the stop sequence)


def install_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_name(profile: Profile) -> str:
    return f"llmctl-{profile.name}.service"


def render(config: Config, names: list[str] | None, opts: Options, paths: Paths) -> list[ExportFile]:
    files = [str(Path(f).resolve()) for f in config.files]
    head = [f"# {h}".rstrip() for h in header("systemd", config, names=names)]
    return [ExportFile(unit_name(p), unit(p, head, files, opts)) for p in servers(config, names)]


def word(text: str, *, exec_line: bool = True) -> str:
    """One word of an Exec line (or an Environment= assignment): ``%`` escaped, ``$`` too on an
    Exec line (systemd expands both there), quoted where it holds a space, a quote or a backslash."""
    text = text.replace("%", "%%")
    if exec_line:
        text = text.replace("$", "$$")
    if any(c in text for c in ' "\\\'\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def unit(p: Profile, head: list[str], files: list[str], opts: Options) -> str:
    llmctl = [*opts.llmctl_argv, *[w for f in files for w in ("-f", f)]]
    start = " ".join(word(w) for w in [*llmctl, "up", p.name])
    stop = " ".join(word(w) for w in [*llmctl, "down", p.name])
    lines = head + ["# The keeper stays in front: this unit runs `llmctl up` and `llmctl down`, and llmctl's keeper",
              "# restarts the server by the profile's policy (see the README, \"When one machine is not enough\").",
              "", "[Unit]", f"Description=llmctl server {p.name}" + (f": {p.description}" if p.description else ""),
              "", "[Service]", "Type=oneshot", "RemainAfterExit=yes",
              f"# the Python that exported this unit runs llmctl, on the profile files {', '.join(files)}",
              f"ExecStart={start}", f"ExecStop={stop}",
              f"# {said(p, 'start_timeout')} plus {MARGIN} s",
              f"TimeoutStartSec={seconds(p.effective_start_timeout) + MARGIN}",
              f"# {said(p, 'stop_timeout')} plus {MARGIN} s", f"TimeoutStopSec={seconds(p.stop_timeout) + MARGIN}"]
    home = os.environ.get("LLMCTL_HOME")
    if home:
        lines += ["# LLMCTL_HOME as it was set when this unit was exported: `llmctl status` must look there",
                  f"Environment={word('LLMCTL_HOME=' + home, exec_line=False)}"]
    if p.api_key_env:
        lines += [f"# the server's API key: {p.api_key_env}=KEY in this file (mode 0600), never in the unit "
                  f"({said(p, 'api_key_env')})", "EnvironmentFile=-%E/llmctl/keys.env"]
    lines += ["", "[Install]", "WantedBy=default.target"]
    return "\n".join(lines) + "\n"
