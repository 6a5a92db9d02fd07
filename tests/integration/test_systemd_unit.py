"""The unit file, checked by systemd's own tools and parsed for what issue 6 asks of it.

``systemd-analyze verify`` runs with ``--root`` on a throw-away root holding the unit,
the host's system units (the targets it depends on), the ``ratekeeper`` user made by
``systemd-sysusers`` from our sysusers file, our tmpfiles directories, and a stand-in
for every program an ``Exec*=`` line runs (verify checks they are executable). verify
exits 0 on an unknown key or a bad value and only prints them, so any line about the
unit counts as a failure: deliberately broken copies prove the check catches them.
``systemd-analyze security --offline`` scores the hardening.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.app import Daemon

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "ratekeeper.service"
SYSUSERS = SYSTEMD_DIR / "ratekeeper.sysusers"
TMPFILES = SYSTEMD_DIR / "ratekeeper.tmpfiles"
HOST_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value assigned, in order (systemd.syntax(7) subset)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise ValueError(f"not an assignment inside a section: {line!r}")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install systemd's tools (.ci/run does)")
    return path


def _host_units() -> Path:
    for candidate in HOST_UNITS:
        if (candidate / "sysinit.target").is_file():
            return candidate
    pytest.fail(f"no host system units in {', '.join(map(str, HOST_UNITS))}")


def _programs(unit: Unit) -> set[str]:
    """The absolute program paths of every Exec*= line (prefixes like '-' or '+' dropped)."""
    programs = set()
    for key in EXEC_KEYS:
        for value in unit["Service"].get(key, []):
            program = value.split()[0].lstrip("-@:+!")
            if program.startswith("/"):
                programs.add(program)
    return programs


def _make_root(root: Path, unit_text: str) -> Path:
    """A root with the unit installed, its user, its directories and stand-in programs."""
    shutil.copytree(_host_units(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ratekeeper.service").write_text(unit_text, encoding="utf-8")
    for program in _programs(parse_unit(unit_text)):
        stand_in = root / program.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stand_in.chmod(0o755)
    sysusers = [_tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)]
    subprocess.run(sysusers, check=True, capture_output=True)
    tmpfiles = [_tool("systemd-tmpfiles"), f"--root={root}", "--create", str(TMPFILES)]
    subprocess.run(tmpfiles, check=True, capture_output=True)
    return root


def verify_problems(root: Path) -> list[str]:
    """What ``systemd-analyze verify`` reports about the unit ([] when it is clean)."""
    command = [_tool("systemd-analyze"), "verify", f"--root={root}", "ratekeeper.service"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    problems = [line for line in lines if "ratekeeper" in line]
    if done.returncode != 0 and not problems:
        problems = lines or [f"systemd-analyze verify exited {done.returncode}"]
    return problems


def test_given_the_unit_when_verified_by_systemd_then_nothing_is_reported(tmp_path: Path) -> None:
    root = _make_root(tmp_path / "root", UNIT.read_text(encoding="utf-8"))

    assert verify_problems(root) == []


@pytest.mark.parametrize(
    ("directive", "broken"),
    [
        ("ProtectHome=yes", "ProtectHomee=yes"),  # a misspelt key
        ("ProtectHome=yes", "ProtectHome=maybe"),  # a bad value
        ("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictAddressFamilies=AF_BOGUS"),
        ("Type=notify", "Type=notifyy"),
        ("[Install]", "[Instal]"),
    ],
)
def test_given_a_broken_copy_when_verified_then_the_problem_is_reported(
    tmp_path: Path, directive: str, broken: str
) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert directive in text
    root = _make_root(tmp_path / "root", text.replace(directive, broken, 1))

    assert verify_problems(root) != []


def test_given_the_unit_when_parsed_then_it_has_every_directive_issue_6_asks_for() -> None:
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))
    service = {key: values[-1] for key, values in unit["Service"].items()}

    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "User": "ratekeeper",
        "Group": "ratekeeper",
        "StateDirectory": "ratekeeper",
        "ConfigurationDirectory": "ratekeeper",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",  # the drain owns the embedded redis-server's end
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert service["ExecStart"].split()[-1] == "run"
    assert float(service["WatchdogSec"]) > 0
    assert float(service["TimeoutStartSec"]) > Daemon.startup_timeout  # READY comes in time
    credentials = unit["Service"]["LoadCredential"]
    assert credentials and all(value.split(":")[0] for value in credentials)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_given_sysusers_and_tmpfiles_when_applied_to_a_root_then_user_and_directories_exist(
    tmp_path: Path,
) -> None:
    root = _make_root(tmp_path / "root", UNIT.read_text(encoding="utf-8"))
    passwd = (root / "etc/passwd").read_text(encoding="utf-8").splitlines()
    users = {line.split(":")[0]: line.split(":") for line in passwd}
    state = root / "var/lib/ratekeeper"

    assert "ratekeeper" in users
    assert users["ratekeeper"][5] == "/var/lib/ratekeeper"
    assert users["ratekeeper"][6].endswith("nologin")
    assert (root / "etc/ratekeeper").is_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert state.stat().st_uid == int(users["ratekeeper"][2])


def test_given_the_unit_when_its_exposure_is_scored_then_systemd_rates_it_ok(
    tmp_path: Path,
) -> None:
    root = _make_root(tmp_path / "root", UNIT.read_text(encoding="utf-8"))
    command = [
        _tool("systemd-analyze"),
        "security",
        "--offline=yes",
        "--threshold=20",  # in tenths: fail above an exposure of 2.0 (1.5 today)
        f"--root={root}",
        "ratekeeper.service",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
