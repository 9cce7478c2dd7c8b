"""Tests for carebus.settings: defaults, the TOML file, the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from carebus.errors import ConfigError
from carebus.settings import Settings, env_names, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carebus.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestSources:
    def test_defaults_without_file_or_environment(self) -> None:
        """With nothing configured, the settings equal the dataclass defaults."""
        assert load_settings({}) == Settings()

    def test_file_overrides_defaults(self, tmp_path: Path) -> None:
        """A value in the TOML file replaces the default."""
        path = write(tmp_path, '[mllp]\nport = 3575\n[kafka]\nclient_id = "from-file"\n')
        settings = load_settings({}, path)
        assert settings.mllp.port == 3575
        assert settings.kafka.client_id == "from-file"

    def test_environment_overrides_file(self, tmp_path: Path) -> None:
        """CAREBUS_<SECTION>_<FIELD> wins over the same value in the file."""
        path = write(tmp_path, "[mllp]\nport = 3575\nhost = '0.0.0.0'\n")
        settings = load_settings({"CAREBUS_MLLP_PORT": "4575"}, path)
        assert settings.mllp.port == 4575
        assert settings.mllp.host == "0.0.0.0"

    def test_config_file_can_be_named_in_the_environment(self, tmp_path: Path) -> None:
        """CAREBUS_CONFIG names the TOML file when no path is passed."""
        path = write(tmp_path, "[topics]\nprefix = 'region'\n")
        assert load_settings({"CAREBUS_CONFIG": str(path)}).topics.prefix == "region"

    def test_other_environment_variables_are_ignored(self) -> None:
        """Variables without the CAREBUS_ prefix do not matter."""
        assert load_settings({"PATH": "/bin", "MLLP_PORT": "1"}) == Settings()

    def test_sample_config_in_deploy_loads(self) -> None:
        """deploy/carebus.toml, the documented sample, is a valid settings file."""
        settings = load_settings({}, REPO_ROOT / "deploy" / "carebus.toml")
        assert settings.topics.prefix == "carebus"


class TestCoercion:
    def test_numbers_booleans_paths_and_tuples(self) -> None:
        """Environment strings become ints, floats, booleans, paths and tuples."""
        settings = load_settings(
            {
                "CAREBUS_MLLP_PORT": "2600",
                "CAREBUS_MLLP_IDLE_TIMEOUT_S": "12.5",
                "CAREBUS_LOG_MASK_PATIENT_DATA": "no",
                "CAREBUS_BROKER_HOME": "/var/lib/broker",
                "CAREBUS_TRANSLATE_STRICT_SENDERS": "RJE, M83001,",
            }
        )
        assert settings.mllp.port == 2600
        assert settings.mllp.idle_timeout_s == 12.5
        assert settings.log.mask_patient_data is False
        assert settings.broker.home == Path("/var/lib/broker")
        assert settings.translate.strict_senders == ("RJE", "M83001")

    def test_empty_optional_value_is_none(self) -> None:
        """An empty string for an optional setting means None."""
        settings = load_settings({"CAREBUS_KAFKA_SASL_MECHANISM": ""})
        assert settings.kafka.sasl_mechanism is None

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CAREBUS_MLLP_PORT", "twenty"),
            ("CAREBUS_LOG_MASK_PATIENT_DATA", "maybe"),
            ("CAREBUS_LOG_FORMAT", "xml"),
            ("CAREBUS_BROKER_START_TIMEOUT_S", "soon"),
        ],
    )
    def test_bad_values_are_config_errors_naming_the_setting(self, name: str, value: str) -> None:
        """A value that cannot be converted raises ConfigError naming the setting."""
        with pytest.raises(ConfigError) as info:
            load_settings({name: value})
        section, _, field = name.removeprefix("CAREBUS_").lower().partition("_")
        assert f"{section}.{field}" in str(info.value)


class TestUnknownNames:
    def test_unknown_environment_name_is_rejected(self) -> None:
        """A misspelt CAREBUS_ variable raises ConfigError naming it."""
        with pytest.raises(ConfigError) as info:
            load_settings({"CAREBUS_MLLP_PROT": "1"})
        assert "CAREBUS_MLLP_PROT" in str(info.value)

    def test_unknown_section_in_file_is_rejected(self, tmp_path: Path) -> None:
        """A TOML table that is not a settings section raises ConfigError."""
        with pytest.raises(ConfigError) as info:
            load_settings({}, write(tmp_path, "[kafak]\nclient_id = 'x'\n"))
        assert "kafak" in str(info.value)

    def test_unknown_key_in_file_is_rejected(self, tmp_path: Path) -> None:
        """A key a section does not have raises ConfigError naming section and key."""
        with pytest.raises(ConfigError) as info:
            load_settings({}, write(tmp_path, "[mllp]\nprot = 1\n"))
        assert "[mllp]" in str(info.value)
        assert "prot" in str(info.value)

    def test_invalid_toml_is_a_config_error(self, tmp_path: Path) -> None:
        """A file that is not TOML raises ConfigError."""
        with pytest.raises(ConfigError):
            load_settings({}, write(tmp_path, "[mllp\n"))

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A config file that does not exist raises ConfigError."""
        with pytest.raises(ConfigError):
            load_settings({}, tmp_path / "absent.toml")


class TestEnvNames:
    def test_every_field_has_an_environment_name(self) -> None:
        """env_names lists CAREBUS_<SECTION>_<FIELD> for each field, and CAREBUS_CONFIG."""
        names = env_names()
        assert "CAREBUS_CONFIG" in names
        assert "CAREBUS_KAFKA_BOOTSTRAP_SERVERS" in names
        assert "CAREBUS_BROKER_JAVA" in names
        defaults = Settings()
        expected = {
            f"CAREBUS_{section.name.upper()}_{f.name.upper()}"
            for section in dataclasses.fields(defaults)
            for f in dataclasses.fields(getattr(defaults, section.name))
        }
        assert names == expected | {"CAREBUS_CONFIG"}


class TestBootstrap:
    def test_local_broker_when_no_cluster_is_named(self) -> None:
        """Without bootstrap servers carebus uses its own broker's address."""
        settings = load_settings({"CAREBUS_BROKER_PORT": "29999"})
        assert settings.uses_local_broker is True
        assert settings.bootstrap_servers == "127.0.0.1:29999"

    def test_named_cluster_wins(self) -> None:
        """With CAREBUS_KAFKA_BOOTSTRAP_SERVERS set, that cluster is used, not the broker."""
        settings = load_settings({"CAREBUS_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
        assert settings.uses_local_broker is False
        assert settings.bootstrap_servers == "k1:9092,k2:9092"
