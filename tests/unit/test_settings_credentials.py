"""Switch secrets from systemd credentials: ``secret = "credential:NAME"`` reads
``$CREDENTIALS_DIRECTORY/NAME``; every failure names the switch and the credential and
never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.settings import ConfigValidationError, load_settings

SECRET = "s3cr3t-value"


def _config(tmp_path: Path, secret: str, switch_id: str = "pbx-1") -> Path:
    path = tmp_path / "ratekeeper.toml"
    path.write_text(
        f'[[switches]]\nid = "{switch_id}"\nkind = "asterisk"\nusername = "rk"\n'
        f'secret = "{secret}"\n',
        encoding="utf-8",
    )
    return path


def _credentials(tmp_path: Path, **files: bytes) -> dict[str, str]:
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, data in files.items():
        (directory / name.replace("_", "-")).write_bytes(data)
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def test_given_a_credential_when_loaded_then_the_secret_is_its_first_line(tmp_path: Path) -> None:
    env = _credentials(tmp_path, ami_pbx_1=f"{SECRET}\n".encode())

    settings = load_settings(_config(tmp_path, "credential:ami-pbx-1"), environ=env)

    assert settings.switches[0].secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings.redacted())


def test_given_the_environment_names_a_credential_when_loaded_then_it_is_read(
    tmp_path: Path,
) -> None:
    env = _credentials(tmp_path, esl_fs=SECRET.encode())
    env["RATEKEEPER_SWITCHES__PBX_1__SECRET"] = "credential:esl-fs"

    settings = load_settings(_config(tmp_path, "inline"), environ=env)

    assert settings.switches[0].secret.get_secret_value() == SECRET


def test_given_a_plain_secret_when_loaded_then_it_is_kept_as_is(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, "credentials-are-elsewhere"), environ={})

    assert settings.switches[0].secret.get_secret_value() == "credentials-are-elsewhere"


@pytest.mark.parametrize(
    ("secret", "files", "with_directory", "reason"),
    [
        ("credential:ami-pbx-1", {}, False, "$CREDENTIALS_DIRECTORY is not set"),
        ("credential:ami-pbx-1", {}, True, "not in "),
        ("credential:../etc/passwd", {}, True, "not a credential name"),
        ("credential:", {}, True, "not a credential name"),
        ("credential:ami-pbx-1", {"ami_pbx_1": b"\n"}, True, "the credential is empty"),
        ("credential:ami-pbx-1", {"ami_pbx_1": b"a\nb\n"}, True, "must be one line"),
        ("credential:ami-pbx-1", {"ami_pbx_1": b"\xff\xfe"}, True, "not valid UTF-8"),
    ],
)
def test_given_an_unusable_credential_when_loaded_then_the_error_names_switch_and_credential(
    tmp_path: Path, secret: str, files: dict[str, bytes], with_directory: bool, reason: str
) -> None:
    env = _credentials(tmp_path, **files) if with_directory else {}
    name = secret.removeprefix("credential:")

    with pytest.raises(ConfigValidationError) as caught:
        load_settings(_config(tmp_path, secret, switch_id="pbx-7"), environ=env)

    message = str(caught.value)
    assert f"switches[0].secret: switch 'pbx-7': credential {name!r}" in message
    assert reason in message
    assert "a\nb" not in message
