"""The `commitment:` configuration section (Storage Commitment report delivery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minipacs.config import CommitmentPolicy, ConfigError, load_config


def _load(tmp_path: Path, text: str) -> CommitmentPolicy:
    path = tmp_path / "minipacs.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).commitment


def test_defaults_and_values(tmp_path: Path) -> None:
    assert _load(tmp_path, "ae_title: PACS\n") == CommitmentPolicy()
    assert not CommitmentPolicy().same_association  # off unless asked for
    assert _load(tmp_path, "commitment:\n  same_association: true\n  retry_delay: 1\n"
                           "  max_retry_delay: 2.5\n  max_attempts: 3\n  give_up_after: 0\n"
                           "  timeout: 4\n") == CommitmentPolicy(True, 1.0, 2.5, 3, 0.0, 4.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("commitment:\n  same_association: yes please\n",
     "commitment.same_association: expected true or false"),
    ("commitment:\n  retry_delay: 0\n", "commitment.retry_delay: 0 is not a valid duration"),
    ("commitment:\n  retry_delay: 10\n  max_retry_delay: 5\n",
     "commitment.max_retry_delay: 5 is less than retry_delay (10)"),
    ("commitment:\n  max_attempts: 0\n", "commitment.max_attempts"),
    ("commitment:\n  give_up_after: -1\n", "commitment.give_up_after"),
    ("commitment:\n  retries: 3\n", "commitment.retries"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
