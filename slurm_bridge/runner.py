"""CommandRunner: the one place slurm_bridge starts processes (a seam for tests).

A runner takes an argv (never a shell line) and returns a ``CommandResult``. It does not
raise for a non-zero exit, a timeout or a missing program: those are in the result, and
the caller maps them to typed errors.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int                 # -1 when the program timed out or could not be started
    stdout: str
    stderr: str
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], *, input: str | None = None,
                 timeout: float | None = None,
                 env: Mapping[str, str] | None = None) -> CommandResult: ...


class SubprocessRunner:
    """Runs argv with ``subprocess.run`` (no shell), capturing text output."""

    def __call__(self, argv: Sequence[str], *, input: str | None = None,
                 timeout: float | None = None,
                 env: Mapping[str, str] | None = None) -> CommandResult:
        argv = tuple(argv)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                                  timeout=timeout, env=dict(env) if env is not None else None,
                                  errors="replace")
        except subprocess.TimeoutExpired:
            return CommandResult(argv, -1, "", f"{argv[0]}: timed out after {timeout} s",
                                 timed_out=True, duration_s=time.monotonic() - started)
        except OSError as exc:  # program missing, not executable
            return CommandResult(argv, -1, "", f"{argv[0]}: cannot run: {exc}",
                                 duration_s=time.monotonic() - started)
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr,
                             duration_s=time.monotonic() - started)


@dataclass
class FakeRunner:
    """A runner for tests: answers from ``responses`` and records every call.

    ``responses`` maps a program name (``"sbatch"``) or an argv prefix tuple
    (``("scontrol", "hold")``) to a CommandResult, or to a callable taking the argv and
    the stdin text. The longest matching prefix wins.
    """

    responses: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, input: str | None = None,
                 timeout: float | None = None,
                 env: Mapping[str, str] | None = None) -> CommandResult:
        argv = tuple(argv)
        self.calls.append({"argv": argv, "input": input, "timeout": timeout, "env": env})
        best = None
        for key in self.responses:
            prefix = (key,) if isinstance(key, str) else tuple(key)
            if argv[:len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, self.responses[key])
        if best is None:
            raise AssertionError(f"FakeRunner has no response for {argv!r}")
        answer = best[1]
        if callable(answer) and not isinstance(answer, CommandResult):
            answer = answer(argv, input)
        if isinstance(answer, CommandResult):
            return CommandResult(argv, answer.rc, answer.stdout, answer.stderr, answer.timed_out)
        raise AssertionError(f"bad FakeRunner response for {argv!r}: {answer!r}")


def result(stdout: str = "", stderr: str = "", rc: int = 0, timed_out: bool = False) -> CommandResult:
    """Shorthand for building a CommandResult in tests (argv is filled in by FakeRunner)."""
    return CommandResult((), rc, stdout, stderr, timed_out)


Responder = Callable[[tuple[str, ...], str | None], CommandResult]
