"""A new user's first minutes, as the README tells them: ``make run`` in a fresh copy of the
repository, then the README's quick-start commands, verbatim, against port 20555.

**The fresh copy.** The files git would commit from this working tree — tracked, plus untracked
but not ignored (``git ls-files -co --exclude-standard``) — copied into a temporary directory with
their modification times. A ``git clone`` would check out the last commit and miss the uncommitted
work, which is exactly what has to be proved before it is committed; the copy holds what a clone of
that commit will hold, and no build artefacts, databases or caches of this checkout.

**The virtual environment.** ``make run`` installs into ``.venv``. A real install takes minutes and
the network, so the copy's ``.venv`` is a symlink to this checkout's, and make is told the install
step is done (``make -o .venv/.installed run``: the same recipe, minus the install). Without ``-o``,
a ``pyproject.toml`` newer than the stamp would make ``pip install -e`` point the shared
environment at the temporary copy. ``PYTHONPATH=<copy>/src`` makes the server import the copy's
sources rather than the checkout the shared editable install points at. That a fresh install works
is what CI's ``make test`` on a fresh machine proves.

**Port 20555.** The README's commands name it, so the test uses it and nothing else: if something
already listens there (a ``make run`` left open, say), the test fails and says so.

**The quick start.** Its second ``sh`` block is run as one bash script, so ``JOB_ID`` carries from
command to command. Each command must exit 0, and where the README shows output (``# → ...`` lines
after the command; ``…`` stands for anything) the command's output must match it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PORT = 20555
OUTPUT_MARK = "# → "

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("git", "make", "curl", "bash")) or not (REPO / ".git").exists(),
    reason="needs a git checkout and git, make, curl and bash",
)


# -- reading the README ------------------------------------------------------------------------


@dataclass
class Step:
    """One command of the quick start and the output the README says it prints (if it says)."""

    command: str
    shows: list[str] = field(default_factory=list)


def quick_start_blocks() -> list[str]:
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", README, re.DOTALL | re.MULTILINE)
    assert section is not None, "README has no '## Quick start' section"
    return re.findall(r"```sh\n(.*?)```", section.group(1), re.DOTALL)


def commands(block: str) -> list[Step]:
    """The block's commands (continuation lines joined), each with its ``# →`` lines."""
    steps: list[Step] = []
    pending = ""
    for line in block.splitlines():
        if pending:
            pending += "\n" + line
        elif line.startswith(OUTPUT_MARK):
            assert steps, f"output shown before any command: {line!r}"
            steps[-1].shows.append(line.removeprefix(OUTPUT_MARK))
            continue
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            pending = line
        if not pending.endswith("\\"):
            steps.append(Step(pending))
            pending = ""
    assert not pending, f"a command ends with a line continuation: {pending!r}"
    return steps


def shows(expected: list[str], output: str) -> bool:
    """Whether ``output`` contains the shown lines, ``…`` matching anything."""
    pattern = ".*?".join(re.escape(piece) for piece in "\n".join(expected).split("…"))
    return re.search(pattern, output, re.DOTALL) is not None


def test_the_quick_start_sets_up_with_make_run_and_make_test_only() -> None:
    setup = quick_start_blocks()[0]
    assert [step.command.split("#")[0].strip() for step in commands(setup)] == ["make run", "make test"]


def test_output_patterns_match_only_what_they_show() -> None:
    assert shows(['{"status":"healthy",…}'], '{"status":"healthy","version":"1"}')
    assert not shows(['{"status":"healthy",…}'], '{"status":"degraded","version":"1"}')
    assert shows(["a…c", "d"], "xx a b c\nd yy")
    assert not shows(["a", "d"], "a\nx\nd")


# -- running it --------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds; TIME_WAIT is no obstacle
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def fresh_copy(destination: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True, timeout=30).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not in the copy either
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)
    return destination


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_script(steps: list[Step], cwd: Path) -> list[tuple[int, str]]:
    """Run the commands in one bash (state carries over); each one's exit status and output."""
    marker = "@@routilux-step@@"
    script = ["set -o pipefail"]
    for step in steps:
        script += [step.command, f"printf '\\n{marker} %d\\n' $?"]
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, capture_output=True, text=True, check=False,
                            timeout=30)
    pieces = re.split(f"\n{marker} (\\d+)\n", result.stdout)  # output, status, output, status, ..., rest
    outcomes = [(int(status), output) for output, status in zip(pieces[0:-1:2], pieces[1::2], strict=True)]
    assert len(outcomes) == len(steps), f"the script stopped early:\n{result.stdout}\n{result.stderr}"
    return outcomes


def test_a_new_user_follows_the_quick_start(tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    assert len(blocks) >= 2, "the quick start should have its set-up block and a block of commands to try"
    steps = commands(blocks[1])
    assert any(step.shows for step in steps), "the quick start shows no output to check"
    assert all(f"localhost:{PORT}" in step.command for step in steps if "curl" in step.command)

    if not port_is_free(PORT):
        pytest.fail(f"port {PORT} is in use (a `make run` still open?): the README's commands name {PORT}, "
                    f"so this test needs it free")

    clone = fresh_copy(tmp_path / "routilux")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ROUTILUX_") and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(clone / "src")
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(["make", "-o", ".venv/.installed", "run"], cwd=clone, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = server.pid  # a new session: make, its shell and the server share this process group
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"`make run` exited with {server.returncode}:\n{log_path.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{PORT}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"`make run` did not serve within 30 s:\n{log_path.read_text()}"
            time.sleep(0.1)

        for step, (status, output) in zip(steps, run_script(steps, clone), strict=True):
            assert status == 0, f"exit status {status}:\n$ {step.command}\n{output}"
            if step.shows:
                assert shows(step.shows, output), (
                    f"the README says\n$ {step.command}\nshows\n" + "\n".join(step.shows)
                    + f"\nbut it printed\n{output}")
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGINT)  # Ctrl-C in the terminal running `make run`
        deadline = time.monotonic() + 15
        while group_alive(pgid) and time.monotonic() < deadline:
            server.poll()  # reap make once it exits, so its pid leaves the group
            time.sleep(0.1)
        left = group_alive(pgid)
        if left:
            os.killpg(pgid, signal.SIGKILL)
        server.wait(5)
    assert not left, f"processes of `make run` were still running 15 s after Ctrl-C:\n{log_path.read_text()}"
    assert "Application shutdown complete" in log_path.read_text(), log_path.read_text()
    assert port_is_free(PORT), f"port {PORT} is still taken after the server stopped"
