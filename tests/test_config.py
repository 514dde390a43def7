"""Configuration: the shipped example loads, overrides layer, every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

import callbridge
from callbridge.config import Config, ConfigError, is_phone_channel, load_config, parse_config

EXAMPLE = Path(callbridge.__file__).parent / "example.toml"


def test_example_config_loads_and_equals_defaults() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg == Config()


def test_environment_overrides_a_key_and_coerces_type() -> None:
    cfg = load_config(
        EXAMPLE,
        environ={"CALLBRIDGE_AMI__SECRET": "s3cret", "CALLBRIDGE_AMI__PORT": "5039"},
    )
    assert cfg.ami.secret == "s3cret"
    assert cfg.ami.port == 5039


def test_environment_json_list_override() -> None:
    cfg = parse_config({}, {"CALLBRIDGE_PBX__TRUNKS": '["1000"]'})
    assert cfg.pbx.trunks == ["1000"]


def test_config_env_var_selects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cb.toml"
    path.write_text('[ami]\nhost = "pbx.local"\n')
    cfg = load_config(None, environ={"CALLBRIDGE_CONFIG": str(path)})
    assert cfg.ami.host == "pbx.local"


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cb.toml"
    path.write_text("[ami]\nhots = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "[ami] hots" in str(err.value)
    assert "unknown key" in str(err.value)


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"amii"):
        parse_config({"amii": {"host": "x"}}, {})


def test_unknown_env_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_NOPE__X"):
        parse_config({}, {"CALLBRIDGE_NOPE__X": "1"})


def test_bad_value_names_key_value_and_expectation() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"ami": {"port": 70000}}, {})
    text = str(err.value)
    assert "[ami] port" in text and "70000" in text and "65535" in text


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({}, {"CALLBRIDGE_AMI__PING_INTERVAL": "soon"})
    assert "[ami] ping_interval" in str(err.value) and "soon" in str(err.value)


def test_bad_regex_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"\[pbx\] phone_channel.*regular expression"):
        parse_config({"pbx": {"phone_channel": "("}}, {})


def test_bad_listen_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"\[web\] listen.*HOST:PORT"):
        parse_config({"web": {"listen": "localhost"}}, {})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[ami\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


@pytest.mark.parametrize(
    ("channel", "extension"),
    [
        ("PJSIP/101-0000002a", "101"),
        ("SIP/2001-00ab", "2001"),
        ("IAX2/300-1", "300"),
        ("PJSIP/trunk-00000029", None),
        ("Local/101@from-queue-00000004;1", None),
        ("DAHDI/1-1", None),
    ],
)
def test_freepbx_convention_tells_phones_from_trunks(channel: str, extension: str | None) -> None:
    assert is_phone_channel(Config().pbx, channel) == extension


def test_numeric_trunk_and_named_phone_are_configurable() -> None:
    pbx = parse_config({"pbx": {"trunks": ["5000"], "phones": {"reception": "100"}}}, {}).pbx
    assert is_phone_channel(pbx, "PJSIP/5000-00000001") is None
    assert is_phone_channel(pbx, "PJSIP/reception-00000001") == "100"


def test_bad_rewrite_template_is_reported_at_load_with_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"rules": {"number_rewrite": "7${CALLERID(num)}"}}, {})
    assert str(err.value).startswith("config: [rules] number_rewrite")


def test_bad_time_zone_is_reported_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"\[rules\] timezone: 'Mars/Base'"):
        parse_config({"rules": {"timezone": "Mars/Base"}}, {})
