"""The ``minipacs`` command, run as ``python -m minipacs`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minipacs import __version__

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The subprocess must import this checkout's minipacs even when it runs elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "minipacs", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd or REPO,
        env=env,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"minipacs {__version__}\n"
    assert __version__ == "0.1.0"


def test_serve_with_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers:\n  WORKSTATION: {host: 127.0.0.1, port: 70000}\n", encoding="utf-8")
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "config error: peers.WORKSTATION.port: 70000 is out of range 1-65535\n"
    )
    assert "Traceback" not in result.stderr


def test_serve_with_missing_config_exits_2(tmp_path: Path) -> None:
    result = run("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("config error: ")
    assert "file not found" in result.stderr


def test_serve_check_validates_without_serving(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("ae_title: TESTPACS\nlisten: {port: 0}\nstorage: {root: st}\n", "utf-8")
    result = run("serve", "--config", str(good), "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config OK: {good.resolve()}\n")
    assert "ae_title: TESTPACS\n" in result.stdout
    assert "listen: 127.0.0.1:0\n" in result.stdout
    assert f"storage: {tmp_path.resolve() / 'st'} (fsync on)\n" in result.stdout
    assert not (tmp_path / "st").exists()  # --check creates nothing


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["echo", "127.0.0.1", "70000"], "argument PORT: 70000 is out of range 1-65535"),
        (["echo", "127.0.0.1", "http"], "argument PORT: 'http' is not a port number"),
        (["echo", "127.0.0.1", "104", "--aet", "A" * 17], "argument --aet: AE title"),
        (["echo", "127.0.0.1", "104", "--aec", "A\\B"], "argument --aec: an AE title must not"),
        (["echo", "127.0.0.1", "104", "--timeout", "0"], "argument --timeout: 0 must be"),
        (["echo", "127.0.0.1", "104", "--max-pdu", "0"], "argument --max-pdu: 0 is out of range"),
        (["echo", "127.0.0.1"], "the following arguments are required: PORT"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("minipacs")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from minipacs.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"minipacs {__version__}\n"
    assert main(["echo", "localhost", "0"]) == 2
    assert "out of range" in capsys.readouterr().err
