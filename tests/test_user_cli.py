"""`minipacs user add`: the hash written into the file line by line (comments kept), or the
line printed when the layout is not one we edit safely; the passcode from stdin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minipacs.app.users import add_user, insert_user
from minipacs.config import load_config
from minipacs.security.passwords import ScryptHash, verify_password
from tests.support import WAIT, minipacs_env

H = "scrypt$16$1$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"

COMMENTED = """\
# our PACS
ae_title: MINIPACS   # the title

peers:
  WS1: {host: 10.0.0.9, port: 104}   # reading room
"""


def edit(text: str, name: str = "alice") -> str:
    result = insert_user(textwrap.dedent(text), name, H)
    assert isinstance(result, tuple), result
    return result[0]


def test_no_security_section_is_appended() -> None:
    assert edit(COMMENTED) == COMMENTED + textwrap.dedent(f"""\
        security:
          users:
            alice: {{password: "{H}"}}
        """)


def test_users_created_in_a_security_block_with_its_indent() -> None:
    text = """\
        security:
            check_peer_host: true   # keep me
        logging: {level: INFO}
        """
    assert edit(text) == textwrap.dedent(f"""\
        security:
            users:
              alice: {{password: "{H}"}}
            check_peer_host: true   # keep me
        logging: {{level: INFO}}
        """)


def test_appended_after_the_last_user() -> None:
    text = """\
        security:
          users:
            bob: {allow: [find]}  # radiologist
            # carol: {}
          identity: optional
        """
    assert edit(text) == textwrap.dedent(f"""\
        security:
          users:
            bob: {{allow: [find]}}  # radiologist
            alice: {{password: "{H}"}}
            # carol: {{}}
          identity: optional
        """)


def test_an_existing_user_gets_the_new_password() -> None:
    text = """\
        security:
          users:
            alice: {password: "scrypt$old", allow: [get]}   # keeps its comment
            bob: {allow: [find]}
        """
    result = insert_user(textwrap.dedent(text), "alice", H)
    assert result == (textwrap.dedent(f"""\
        security:
          users:
            alice: {{password: "{H}", allow: [get]}}   # keeps its comment
            bob: {{allow: [find]}}
        """), True)
    added = insert_user(textwrap.dedent(text), "bob", H)
    assert isinstance(added, tuple)
    assert f'bob: {{password: "{H}", allow: [find]}}' in added[0]


@pytest.mark.parametrize(("text", "reason"), [
    ("security: {identity: none}\n", "flow style"),
    ("security:\n  users: {bob: {}}\n", "security.users is written in flow style"),
    ("security:\n  users:\n    alice:\n      password: x\n", "not a one-line"),
])
def test_layouts_we_do_not_edit(text: str, reason: str) -> None:
    result = insert_user(text, "alice", H)
    assert isinstance(result, str) and reason in result


def test_add_user_writes_a_hash_that_verifies(tmp_path: Path) -> None:
    path = tmp_path / "minipacs.yaml"
    path.write_text(COMMENTED, encoding="utf-8")
    path.chmod(0o640)
    added = add_user(path, "alice", "wonderland")
    assert added.written and not added.replaced
    text = path.read_text(encoding="utf-8")
    assert text.startswith(COMMENTED)  # every line and comment kept
    stored = load_config(path).security.users["alice"].password
    assert stored is not None and verify_password("wonderland", ScryptHash.parse(stored))
    assert path.stat().st_mode & 0o777 == 0o640
    again = add_user(path, "alice", "looking-glass")
    assert again.written and again.replaced
    changed = load_config(path).security.users["alice"].password
    assert changed is not None and verify_password("looking-glass", ScryptHash.parse(changed))
    assert "wonderland" not in path.read_text() and "looking-glass" not in path.read_text()


def test_add_user_leaves_a_flow_style_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "minipacs.yaml"
    original = "security: {identity: none}  # compact\n"
    path.write_text(original, encoding="utf-8")
    added = add_user(path, "alice", "pw")
    assert not added.written and added.line.startswith('alice: {password: "scrypt$32768$8$1$')
    assert path.read_text() == original


def run_user_add(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", "user", "add", *args],
                          input=stdin, capture_output=True, text=True, timeout=WAIT * 3,
                          env=minipacs_env(), check=False)


def test_command_reads_the_passcode_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "minipacs.yaml"
    path.write_text(COMMENTED, encoding="utf-8")
    done = run_user_add("alice", "--config", str(path), stdin="s3cret pass\n")
    assert done.returncode == 0, done.stderr
    assert "added user 'alice'" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    stored = load_config(path).security.users["alice"].password
    assert stored is not None and verify_password("s3cret pass", ScryptHash.parse(stored))
    printed = run_user_add("bob", stdin="pw\n")  # no --config: the line to paste
    assert printed.returncode == 0
    assert printed.stdout.startswith('bob: {password: "scrypt$')


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("al ice",), "pw\n", "is not a user name"),
    (("alice",), "\n", "empty passcode"),
    (("alice", "--config", "/nonexistent/minipacs.yaml"), "pw\n", "file not found"),
])
def test_command_errors_exit_2(args: tuple[str, ...], stdin: str, message: str) -> None:
    done = run_user_add(*args, stdin=stdin)
    assert done.returncode == 2
    assert message in done.stderr
