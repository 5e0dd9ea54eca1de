"""minipacs.config: every kind of bad file gives one line naming the key; good files load."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from minipacs.config import (
    CommitmentPolicy,
    Config,
    ConfigError,
    ConnectPolicy,
    PeerConfig,
    RetrievePolicy,
    ServerLimits,
    check_ae_title,
    load_config,
)
from minipacs.ports import DuplicatePolicy

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
ae_title: MINIPACS
listen: {host: 0.0.0.0, port: 11112}
storage: {root: ./minipacs-data/store, fsync: true}
database: {url: "sqlite+aiosqlite:///./minipacs-data/index.db"}
peers:
  WORKSTATION: {host: 127.0.0.1, port: 11113}
  " VIEWER ": {host: viewer.example.org, port: 104}
security: {check_called_ae_title: true, known_calling_aes_only: false}
limits:
  max_associations: 8
  max_pdu_length: 65536
  artim_timeout: 2.5
  idle_timeout: 0
  association_timeout: 600
  async_ops_window: 0
  shutdown_grace: 3
sop_classes: {extra_storage: ["1.2.826.0.1.3680043.9.9999.1"]}
logging: {level: debug}
"""


def write(tmp_path: Path, text: str, name: str = "minipacs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("config error: "), message
    return message


def test_good_config_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(path)
    base = tmp_path.resolve()
    assert isinstance(config, Config)
    assert config.source == path.resolve()
    assert config.ae_title == "MINIPACS"
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 11112)
    assert config.storage.root == base / "minipacs-data" / "store"
    assert config.storage.fsync is True
    assert config.database.url == f"sqlite+aiosqlite:///{base}/minipacs-data/index.db"
    assert dict(config.peers) == {
        "WORKSTATION": PeerConfig("127.0.0.1", 11113),
        "VIEWER": PeerConfig("viewer.example.org", 104),
    }
    assert config.peer("VIEWER  ") == PeerConfig("viewer.example.org", 104)
    assert config.peer("NOBODY") is None
    assert config.security.check_called_ae_title is True
    assert config.security.unknown_aes is None  # known_calling_aes_only: false changes nothing
    limits = config.limits
    assert limits.max_associations == 8
    assert limits.max_pdu_length == 65536
    assert limits.artim_timeout == 2.5
    assert limits.idle_timeout == 0.0
    assert limits.association_timeout == 600.0
    assert limits.async_ops_window == 0
    assert limits.shutdown_grace == 3.0
    assert config.sop_classes.extra_storage == ("1.2.826.0.1.3680043.9.9999.1",)
    assert config.logging.level == "DEBUG"
    # Loading the same file twice gives equal values; they are frozen.
    assert load_config(path) == config
    with pytest.raises(AttributeError):
        config.ae_title = "OTHER"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.peers["NEW"] = PeerConfig("h", 1)  # type: ignore[index]


def test_shipped_example_config_is_valid() -> None:
    example = REPO / "config" / "minipacs.yaml"
    config = load_config(example)
    assert config.listen.host == "0.0.0.0"
    assert config.storage.root == example.parent / "minipacs-data" / "store"
    assert "WORKSTATION" in config.peers


def test_container_config_is_valid_and_uses_the_volume() -> None:
    config = load_config(REPO / "docker" / "minipacs.yaml")
    assert config.storage.root == Path("/var/lib/minipacs/store")
    assert config.database.url == "sqlite:////var/lib/minipacs/index.db"
    # Secure defaults (issue 12): unknown AEs push only, no anonymous HTTP, an audit trail.
    assert {op.value for op in config.unknown_ae_operations()} == {"echo", "store"}
    assert config.anonymous_http_operations() == frozenset()
    assert config.security.check_called_ae_title is True
    assert config.security.allow_passwords_without_tls is False
    assert config.logging.audit == Path("/var/lib/minipacs/audit.jsonl")


def test_embedded_defaults_bind_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    cwd = Path.cwd()
    assert config.source is None
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 11112)
    assert config.ae_title == "MINIPACS"
    assert config.storage.root == cwd / "minipacs-data" / "store"
    assert config.database.url == f"sqlite:///{cwd}/minipacs-data/index.db"
    assert dict(config.peers) == {}
    assert config.limits.max_pdu_length == 262144


def test_relative_paths_follow_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        conf_dir,
        """\
        storage: {root: data/store}
        database: {url: "sqlite+aiosqlite:///../db/index.db?timeout=5"}
        """,
    )
    config = load_config(path)
    base = conf_dir.resolve()
    assert config.storage.root == base / "data" / "store"
    assert config.database.url == f"sqlite+aiosqlite:///{base.parent}/db/index.db?timeout=5"


def test_absolute_and_memory_database_urls_are_kept(tmp_path: Path) -> None:
    absolute = "sqlite+aiosqlite:////var/lib/minipacs/index.db"
    assert load_config(write(tmp_path, f'database: {{url: "{absolute}"}}')).database.url == absolute
    memory = "sqlite+aiosqlite:///:memory:"
    assert load_config(write(tmp_path, f'database: {{url: "{memory}"}}')).database.url == memory
    pg = "postgresql+asyncpg://user@db/minipacs"
    assert load_config(write(tmp_path, f'database: {{url: "{pg}"}}')).database.url == pg


def test_empty_file_and_empty_sections_take_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).listen.port == 11112
    config = load_config(write(tmp_path, "peers:\nlimits:\n"))
    assert dict(config.peers) == {}
    assert config.limits.idle_timeout == 300.0


def test_retrieve_defaults_and_values(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, "")).retrieve
    assert (default.connect.max_per_peer, default.connect.connect_timeout, default.timeout,
            default.patient_issuers) == (2, 10.0, 60.0, "all")
    assert load_config(REPO / "config" / "minipacs.yaml").retrieve == default
    text = "retrieve: {patient_issuers: refuse, max_associations_per_peer: 5, timeout: 1.5}"
    custom = load_config(write(tmp_path, text)).retrieve
    assert (custom.patient_issuers, custom.connect.max_per_peer, custom.timeout) == (
        "refuse", 5, 1.5)


def test_policy_types_hold_the_defaults(tmp_path: Path) -> None:
    """An omitted key takes the default of the type the server and services obey."""
    config = load_config(write(tmp_path, ""))
    assert config.limits == ServerLimits()
    assert config.retrieve == RetrievePolicy()
    assert config.retrieve.connect == ConnectPolicy()
    assert config.commitment == CommitmentPolicy()
    assert config.storage.duplicates is DuplicatePolicy.KEEP_FIRST


def test_outbound_associations_follow_the_limits_section(tmp_path: Path) -> None:
    text = ("limits: {artim_timeout: 4, max_pdu_length: 65536}\n"
            "retrieve: {connect_timeout: 2.5, max_associations_per_peer: 3}\n")
    connect = load_config(write(tmp_path, text)).retrieve.connect
    assert connect == ConnectPolicy(max_per_peer=3, connect_timeout=2.5, artim_timeout=4.0,
                                    max_pdu_length=65536)


def test_query_max_results_defaults_to_unlimited(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).query.max_results == 0
    assert load_config(write(tmp_path, "query:\n")).query.max_results == 0
    assert load_config(write(tmp_path, "query: {max_results: 500}")).query.max_results == 500
    assert load_config(REPO / "config" / "minipacs.yaml").query.max_results == 0


def test_limits_max_inflated_mb(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).limits.max_inflated_mb == 1024
    small = "limits: {max_inflated_mb: 64}"
    assert load_config(write(tmp_path, small)).limits.max_inflated_mb == 64
    assert load_config(REPO / "config" / "minipacs.yaml").limits.max_inflated_mb == 1024


def test_query_strict_hierarchy_defaults_to_lenient(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).query.strict_hierarchy is False
    strict = "query: {strict_hierarchy: true}"
    assert load_config(write(tmp_path, strict)).query.strict_hierarchy is True
    assert load_config(REPO / "config" / "minipacs.yaml").query.strict_hierarchy is False


def test_listen_port_zero_means_ephemeral(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "listen: {port: 0}")).listen.port == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown key, at the top level and nested, with a suggestion
        ("ae_titel: X\n", "config error: ae_titel: unknown key (did you mean 'ae_title'?)"),
        ("storage: {fsynk: true}\n", "config error: storage.fsynk: unknown key (did you mean"),
        ("peers: {WS: {host: h, port: 1, tlz: x}}\n",
         "config error: peers.WS.tlz: unknown key (did you mean 'tls'?)"),
        # wrong types
        ('storage: {fsync: "yes"}\n', "config error: storage.fsync: expected true or false"),
        ("storage: {fsync: 1}\n", "config error: storage.fsync: expected true or false"),
        ("listen: {port: true}\n", "config error: listen.port: expected an integer"),
        ('listen: {port: "11112"}\n', "config error: listen.port: expected an integer"),
        ("limits: {max_associations: 1.5}\n", "config error: limits.max_associations: expected"),
        ("limits: {idle_timeout: false}\n", "config error: limits.idle_timeout: expected a number"),
        ("ae_title: 123\n", "config error: ae_title: expected a string, got int 123 (quote it)"),
        ("listen: [1, 2]\n", "config error: listen: expected a mapping"),
        ("logging: {level: LOUD}\n", "config error: logging.level: 'LOUD' is not one of"),
        # AE titles: too long, backslash, control character, empty, all spaces
        ("ae_title: ABCDEFGHIJKLMNOPQ\n", "config error: ae_title: AE title 'ABCDEFGHIJKLMNOPQ'"),
        ('ae_title: "A\\\\B"\n', "config error: ae_title: an AE title must not contain a"),
        ('ae_title: "A\\tB"\n', "config error: ae_title: an AE title may hold printable ASCII"),
        ('ae_title: ""\n', "config error: ae_title: an AE title must not be empty"),
        ('ae_title: "    "\n', "config error: ae_title: an AE title must not be empty"),
        ("peers: {ABCDEFGHIJKLMNOPQ: {host: h, port: 1}}\n", "config error: peers.ABCDEFGHIJKL"),
        # ports and other ranges
        (
            "peers: {WORKSTATION: {host: 127.0.0.1, port: 70000}}\n",
            "config error: peers.WORKSTATION.port: 70000 is out of range 1-65535",
        ),
        ("peers: {WS: {host: h, port: 0}}\n", "config error: peers.WS.port: 0 is out of range"),
        ("listen: {port: -1}\n", "config error: listen.port: -1 is out of range 0-65535"),
        ("limits: {max_pdu_length: 0}\n", "config error: limits.max_pdu_length: 0 is out of range"),
        ("limits: {artim_timeout: 0}\n", "config error: limits.artim_timeout: 0 is not a valid"),
        ("limits: {shutdown_grace: -1}\n", "config error: limits.shutdown_grace: -1 is not"),
        ("limits: {async_ops_window: 65536}\n", "config error: limits.async_ops_window: 65536"),
        # peers: duplicates (YAML-level and after space stripping), missing keys, bad host
        (
            "peers:\n  WS: {host: a, port: 1}\n  WS: {host: b, port: 2}\n",
            "config error: peers.WS: duplicate key (again on line 3)",
        ),
        (
            'peers:\n  WS: {host: a, port: 1}\n  "WS ": {host: b, port: 2}\n',
            "config error: peers['WS ']: duplicate peer AE title 'WS'",
        ),
        ("listen: {port: 1}\nlisten: {port: 2}\n", "config error: listen: duplicate key"),
        ("peers: {WS: {host: a}}\n", "config error: peers.WS.port: required key is missing"),
        ("peers: {WS: {host: 'a b', port: 1}}\n", "config error: peers.WS.host: 'a b' is not"),
        (
            "security: {known_calling_aes_only: true}\n",
            "config error: security.known_calling_aes_only: refuses every calling AE not in "
            "peers, but no peers are configured",
        ),
        # extra storage SOP class UIDs
        (
            "sop_classes: {extra_storage: ['1..3']}\n",
            "config error: sop_classes.extra_storage[0]: '1..3' is not a valid UID",
        ),
        (
            "sop_classes: {extra_storage: ['1.2.3', 'x.y']}\n",
            "config error: sop_classes.extra_storage[1]: 'x.y' is not a valid UID",
        ),
        ("sop_classes: {extra_storage: 1.2}\n", "config error: sop_classes.extra_storage: expect"),
        # database URL
        ('database: {url: "index.db"}\n', "config error: database.url: 'index.db' is not a"),
        ("storage: {duplicates: overwrite}\n",
         "config error: storage.duplicates: 'overwrite' is not one of keep-first, replace"),
        ("storage: {patient_conflict: move}\n",
         "config error: storage.patient_conflict: 'move' is not one of refuse, keep-apart"),
        ("storage: {min_free_mb: -1}\n", "config error: storage.min_free_mb: -1 is out of range"),
        ('database: {url: "sqlite+pysqlcipher:///x.db"}\n',
         "config error: database.url: unsupported SQLite driver"),
        # C-FIND result limit
        ("query: {max_results: -1}\n", "config error: query.max_results: -1 is out of range"),
        ('query: {max_results: "10"}\n', "config error: query.max_results: expected an integer"),
        ("query: {max_result: 10}\n", "config error: query.max_result: unknown key (did you"),
        ("limits: {max_inflated_mb: 0}\n",
         "config error: limits.max_inflated_mb: 0 is out of range"),
        ("query: {strict_hierarchy: 1}\n",
         "config error: query.strict_hierarchy: expected true or false"),
        # C-MOVE / C-GET
        ("retrieve: {patient_issuers: some}\n",
         "config error: retrieve.patient_issuers: 'some' is not one of all, refuse"),
        ("retrieve: {max_associations_per_peer: 0}\n",
         "config error: retrieve.max_associations_per_peer: 0 is out of range"),
        ("retrieve: {connect_timeout: 0}\n",
         "config error: retrieve.connect_timeout: 0 is not a valid duration"),
        ("retrieve: {timeout: -1}\n", "config error: retrieve.timeout: -1 is not a valid"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text).startswith(expected)


def test_yaml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "listen:\n  host: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config error: {path}:3:1: invalid YAML")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^config error: .*nope\.yaml: file not found$"):
        load_config(missing)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error_for(tmp_path, "- a\n- b\n")
    assert message.endswith("minipacs.yaml: the top level must be a mapping, got a list")


def test_config_error_pickles_and_keeps_its_parts() -> None:
    error = ConfigError("limits.idle_timeout", "multi\nline   reason")
    assert str(error) == "config error: limits.idle_timeout: multi line reason"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.where, clone.reason, str(clone)) == (error.where, error.reason, str(error))


@pytest.mark.parametrize(
    ("title", "expected"),
    [("MINIPACS", "MINIPACS"), ("  ANY-SCP ", "ANY-SCP"), ("A" * 16, "A" * 16), ("a b", "a b")],
)
def test_check_ae_title_accepts_and_strips(title: str, expected: str) -> None:
    assert check_ae_title(title) == expected


@pytest.mark.parametrize("title", ["", "   ", "A" * 17, "A\\B", "A\x00B", "A\x7fB", "ÄBC"])
def test_check_ae_title_rejects(title: str) -> None:
    with pytest.raises(ValueError):
        check_ae_title(title)
