"""``exec``: run a program, never through a shell.

``argv`` is a list; each entry, rendered from templates, stays exactly one
argument (no word splitting, no globbing, no shell).  The environment is
minimal and explicit: ``PATH`` plus what ``env`` gives; the values of
secret-named entries (``API_TOKEN``, ``PASSWORD`` ...) are scrubbed from the
output and error the step records.  The event as JSON is
the program's stdin unless ``stdin`` says otherwise.  On timeout the whole
process group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import orjson

from reactor.actions.action import ActionContext, Duration, action
from reactor.errors import ActionError, ArgumentErrors, StepTimeout
from reactor.rules.arguments import _SECRET_KEY, REDACTED
from reactor.rules.template import to_jsonable

__all__ = ["EXEC", "ExecArgs"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ExecArgs:
    argv: list[str]
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: Duration = Duration(30.0)  # noqa: RUF009 (NewType: no call at run time)
    cwd: str | None = None
    check: bool = True


def _check(args: ExecArgs) -> None:
    if not args.argv:
        raise ArgumentErrors([("argv", "argv must name a program")])


async def _read_bounded(stream: asyncio.StreamReader | None) -> bytes:
    if stream is None:
        return b""
    data = bytearray()
    while chunk := await stream.read(65536):
        if len(data) < OUTPUT_LIMIT:
            data += chunk[: OUTPUT_LIMIT - len(data)]
    return bytes(data)


@action("exec", shorthand="argv", check=_check)
async def EXEC(ctx: ActionContext, args: ExecArgs) -> dict[str, Any]:
    """Run ``argv`` without a shell; result ``{returncode, stdout, stderr}``; fails on non-zero exit
    unless ``check: false``."""
    stdin = orjson.dumps(ctx.event, default=to_jsonable) if args.stdin is None else args.stdin.encode()
    env = {"PATH": DEFAULT_PATH, "REACTOR_VM": ctx.vm.name, "REACTOR_RULE": ctx.rule,
           "REACTOR_EVENT": ctx.event.name, **args.env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *args.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=args.cwd,
            start_new_session=True,
        )
    except OSError as err:
        raise ActionError(f"exec {args.argv[0]!r}: {err.strerror or err}") from err
    try:
        async with asyncio.timeout(args.timeout):
            out, err_out, _ = await asyncio.gather(
                _read_bounded(proc.stdout), _read_bounded(proc.stderr), _feed(proc, stdin)
            )
            code = await proc.wait()
    except BaseException as err:
        _kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(proc.wait())
        if isinstance(err, TimeoutError):
            raise StepTimeout(f"exec {args.argv[0]!r} did not finish within {args.timeout:g}s (killed)") from err
        raise
    secrets = _secret_env_values(args.env)
    stderr = _scrub(err_out.decode(errors="replace"), secrets)
    result = {"returncode": code, "stdout": _scrub(out.decode(errors="replace"), secrets), "stderr": stderr}
    if code != 0 and args.check:
        tail = stderr.strip().splitlines()[-1:] or [""]
        raise ActionError(f"exec {args.argv[0]!r} exited with {code}" + (f": {tail[0]}" if tail[0] else ""))
    return result


def _secret_env_values(env: dict[str, str]) -> list[str]:
    """Values of ``env`` entries whose names say they are secrets (``API_TOKEN``, ``DB_PASSWORD`` ...)."""
    return [v for k, v in env.items() if _SECRET_KEY.search(k) and len(v) >= 4]


def _scrub(text: str, secrets: list[str]) -> str:
    """The program's output with secret env values replaced (a program may echo them: ``curl -v``)."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        proc.stdin.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
