"""The `http:` section: off unless present, loopback by default, every key validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from minipacs.config import ConfigError, HttpConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: str) -> HttpConfig | None:
    path = tmp_path / "minipacs.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).http


def test_off_unless_configured_and_loopback_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "ae_title: PACS\n") is None
    assert load_config(None).http is None
    assert load(tmp_path, "http:\n") == HttpConfig("127.0.0.1", 8042, (), None)
    config = load(tmp_path, 'http: {host: 0.0.0.0, port: 0, cors_origins: ["*", '
                            '"https://viewer.example/"], viewer_root: ohif}\n')
    assert config == HttpConfig("0.0.0.0", 0, ("*", "https://viewer.example"), tmp_path / "ohif")
    example = load_config(REPO / "config" / "minipacs.yaml").http
    assert example == HttpConfig("127.0.0.1", 8042, (), None)


@pytest.mark.parametrize(("text", "where"), [
    ("http: {port: 70000}", "http.port"),
    ("http: {host: 'no such host!'}", "http.host"),
    ("http: {cors_origins: 'https://a.example'}", "http.cors_origins"),
    ("http: {cors_origins: ['ftp://a.example']}", "http.cors_origins[0]"),
    ("http: {viewer_root: 3}", "http.viewer_root"),
    ("http: {tls: 1}", "http.tls"),  # a boolean (true needs the tls: section)
])
def test_errors_name_the_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.where == where, str(caught.value)
