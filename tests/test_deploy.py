"""The deployment files (issue 15): docker/compose.yaml and the systemd unit.

No container engine runs here, so the compose file is read as data: it must reference only
files that exist, run the image on the configuration it mounts (which must load and point
at the compose file's PostgreSQL), and keep its secure defaults. The same topology (two
processes, one PostgreSQL index, one store) runs natively in
tests/interop/test_several_processes.py; tests/test_install.py checks the mounted
configuration with `serve --check` on the image's own install. The systemd unit is checked
by ``systemd-analyze verify`` and its offline security analysis.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pytest
import yaml
from sqlalchemy.engine import make_url

from minipacs.config import load_config
from tests.support import REPO

DOCKER: Final = REPO / "docker"
COMPOSE: Final = DOCKER / "compose.yaml"
UNIT: Final = DOCKER / "systemd" / "minipacs@.service"
SYSTEMD_ANALYZE: Final = "/usr/bin/systemd-analyze"
VOLUME: Final = "/var/lib/minipacs"
PASSWORD: Final = "${MINIPACS_DB_PASSWORD:?"  # required at `up`: no default password
MINIPACS_SERVICES: Final = ("minipacs-1", "minipacs-2")
MAX_EXPOSURE: Final = 2.0  # systemd-analyze security: "OK" is below 4.0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # merge keys (<<) resolved
    assert isinstance(data, dict)
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → source (a named volume, or a host path relative to docker/)."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        out[target] = source
    return out


def test_compose_references_only_files_that_exist(compose: dict[str, Any]) -> None:
    for name in MINIPACS_SERVICES:
        service = compose["services"][name]
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == REPO
        assert (context / service["build"]["dockerfile"]).is_file()
        for source in mounts(service).values():
            if source.startswith("."):  # a bind mount: relative to the compose file
                assert (DOCKER / source).is_file(), source
            else:
                assert source in compose["volumes"], source


def test_the_minipacs_services_share_one_store_and_the_index(compose: dict[str, Any]) -> None:
    services = compose["services"]
    configs = []
    for name in MINIPACS_SERVICES:
        service = services[name]
        command = service["command"]
        assert command[:2] == ["serve", "--config"]
        source = mounts(service)[command[2]]
        configs.append(load_config(DOCKER / source))
        assert mounts(service)[VOLUME] == "store"  # the same named volume for both
        assert service["depends_on"] == {"db": {"condition": "service_healthy"}}
    config = configs[0]
    assert configs[1] == config  # one configuration file for both
    assert PurePosixPath(config.storage.root).is_relative_to(VOLUME)
    url = make_url(config.database.url)
    db = services["db"]["environment"]
    assert (url.get_backend_name(), url.host, url.username, url.database) == (
        "postgresql", "db", db["POSTGRES_USER"], db["POSTGRES_DB"])
    assert url.password is None  # it comes from PGPASSWORD, which libpq reads
    # Each publishes the configured DICOM port, on two host ports.
    published = [services[name]["ports"][0].rsplit(":", 2) for name in MINIPACS_SERVICES]
    assert {target for _host, _port, target in published} == {str(config.listen.port)}
    assert len({port for _host, port, _target in published}) == 2


def test_health_checks_probe_what_each_service_serves(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = load_config(DOCKER / "minipacs-compose.yaml")
    for name in MINIPACS_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "minipacs", "echo"]  # a C-ECHO of its own listener
        assert test[3:5] == ["127.0.0.1", str(config.listen.port)]
        assert test[test.index("--aec") + 1] == config.ae_title
    assert services["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_compose_secure_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    db = services["db"]
    assert "ports" not in db  # the index is reachable from the minipacs services only
    assert all(compose["networks"][net].get("internal") for net in db["networks"])
    assert db["environment"]["POSTGRES_PASSWORD"].startswith(PASSWORD)
    for name in MINIPACS_SERVICES:
        service = services[name]
        assert service["environment"]["PGPASSWORD"].startswith(PASSWORD)
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert "user" not in service  # the image's unprivileged user
    assert "no-new-privileges:true" in db["security_opt"]
    assert "\nUSER minipacs\n" in (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    config = load_config(DOCKER / "minipacs-compose.yaml")
    assert config.security.check_called_ae_title
    assert config.security.http_anonymous == frozenset()
    # Each service appends its audit trail to a volume of its own.
    assert config.logging.audit is not None
    audit_dir = str(PurePosixPath(config.logging.audit).parent)
    volumes = [mounts(services[name])[audit_dir] for name in MINIPACS_SERVICES]
    assert len(set(volumes)) == len(volumes) and "store" not in volumes


# --- systemd -----------------------------------------------------------------------------


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """The unit's sections, each a list of (key, value) in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key, value))
    return sections


def analyze() -> str:
    if not Path(SYSTEMD_ANALYZE).is_file():
        pytest.fail(f"{SYSTEMD_ANALYZE} is missing (apt-get install systemd; scripts/test "
                    "installs it)", pytrace=False)
    return SYSTEMD_ANALYZE


def test_the_systemd_unit_runs_serve_hardened() -> None:
    service = dict(unit_entries(UNIT.read_text(encoding="utf-8"))["Service"])
    assert service["ExecStart"].split()[1:] == ["serve", "--config",
                                                "/etc/minipacs/minipacs.yaml"]
    assert service["User"] == "minipacs"
    assert service["RestartPreventExitStatus"] == "2"  # config errors, a newer index
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].split() == [VOLUME]
    assert service["StateDirectory"] == "minipacs"  # /var/lib/minipacs, made for the user
    assert service["CapabilityBoundingSet"] == ""


def test_systemd_verifies_the_unit_and_rates_it_safe(tmp_path: Path) -> None:
    """`systemd-analyze verify` on an instance of the template (ExecStart pointed at this
    checkout's minipacs: verify wants the program to exist), then its offline exposure."""
    minipacs = str(Path(sys.executable).with_name("minipacs"))  # the test venv's script
    assert Path(minipacs).is_file()
    instance = tmp_path / "minipacs@1.service"
    instance.write_text(UNIT.read_text(encoding="utf-8").replace(
        "/opt/minipacs/bin/minipacs", minipacs), encoding="utf-8")
    verify = subprocess.run([analyze(), "verify", str(instance)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run([analyze(), "security", "--offline=yes", "--no-pager",
                               str(instance)], capture_output=True, text=True, timeout=60,
                              check=False)
    assert security.returncode == 0, security.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match is not None, security.stdout[-500:]
    assert float(match[1]) <= MAX_EXPOSURE, security.stdout
