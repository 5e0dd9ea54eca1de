"""The ``minipacs`` command, run as ``python -m minipacs`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minipacs import __version__
from tests.support import LOOPBACK, ServeProcess, free_port, write_config

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
    assert ("security: unknown AEs [echo, store], identity none, 0 user(s), HTTP without "
            "credentials []\n") in result.stdout
    assert "audit: (none)\n" in result.stdout
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


# --- serve --check: what serve would refuse, said before it starts -----------------------------


@pytest.mark.parametrize(("section", "fragment"), [
    ('database: {url: "nosuchdb://x"}', "database.url: unknown database dialect or driver"),
    ('database: {url: "mysql://x"}', "database.url: the database driver is not installed"),
    ("database: {url: 'sqlite:///afile/index.db'}", "database.url: "),
    ("storage: {root: afile/store}", "storage.root: cannot create"),
    # procfs takes no new folders, not even from root: a parent nobody may write to.
    ("storage: {root: /proc/minipacs-test/store}", "storage.root: cannot create"),
])
def test_serve_check_refuses_what_serve_cannot_use(tmp_path: Path, section: str,
                                                   fragment: str) -> None:
    (tmp_path / "afile").write_text("a file, not a folder\n", encoding="utf-8")
    config = tmp_path / "bad.yaml"
    config.write_text(f"{section}\n", encoding="utf-8")
    for args in (["--check"], []):  # serve itself says the same before it starts
        result = run("serve", "--config", str(config), *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.startswith("config error: ")
        assert result.stderr.count("\n") == 1, result.stderr
        assert fragment in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.yaml"]  # nothing made


def test_serve_port_and_host_override_the_config(tmp_path: Path) -> None:
    result = run("serve", "--check", "--host", "0.0.0.0", "--port", "4104", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "listen: 0.0.0.0:4104\n" in result.stdout
    for args, fragment in ((["--port", "65536"], "argument --port: 65536 is out of range"),
                           (["--host", "not a host"], "argument --host: 'not a host' is not")):
        refused = run("serve", "--check", *args, cwd=tmp_path)
        assert refused.returncode == 2
        assert fragment in refused.stderr


def test_serve_listens_on_the_port_given(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path)  # listen.port 0 there: --port must win
    server = ServeProcess(config, "--port", str(port), "--host", LOOPBACK)
    try:
        assert server.start().port == port
        result = run("echo", LOOPBACK, str(port), "--aec", "MINIPACS")
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
