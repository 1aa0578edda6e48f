"""rtx.conf: SRProxy's own samples load, defects are named, defaults reach only loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from esl_bridge import config

FIXTURES = Path(__file__).parent / "fixtures" / "rtx"


def problems_of(text: str) -> list[config.ConfigProblem]:
    with pytest.raises(config.ConfigError) as info:
        config.from_text(text, "rtx.conf")
    return info.value.problems


def only_problem(text: str) -> config.ConfigProblem:
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_seed_guide_sample_with_comment_tails_loads() -> None:
    settings = config.load(FIXTURES / "seed_guide.conf")
    assert settings.global_.appid == "XXXXX"
    assert settings.global_.sip_svr == "127.0.0.1:5060"
    assert settings.global_.sip_domain == "127.0.0.1"
    assert settings.rtm2sip.on is True
    assert settings.rtm2sip.acc_rule == "1005;10[06-19]"
    assert settings.rtm2sip.numbers[0] == "1005" and settings.rtm2sip.numbers[-1] == "1019"
    assert settings.proxy.on is True
    assert settings.proxy.sip_account == "1000"
    assert settings.proxy.sip_pwd == "1234"
    assert settings.proxy.rtm_account == "1086"
    assert settings.log.level == 2
    assert settings.log.file == str(FIXTURES / "rtc_sip.log")  # relative to the file
    assert settings.log.max_file_size == 100
    assert settings.warnings == ()


def test_repo_sample_with_empty_rtc_rtm_and_pstn_loads() -> None:
    settings = config.load(FIXTURES / "srproxy_repo.conf")
    assert settings.global_.sip_svr == "xxxx:5060"
    assert settings.rtm2sip.numbers == ("1016", "1017", "2001", "2002", "2003", "2004", "2005")
    assert settings.pstn.ip == "192.0.2.122"
    assert settings.pstn.prefix == "9"
    assert settings.pstn.enabled
    # empty [rtc]/[rtm] ip= and port= leave the web server on its defaults
    assert (settings.web.host, settings.web.port) == ("127.0.0.1", 8080)


def test_old_srproxy_sample_loads_with_a_warning_per_legacy_key() -> None:
    settings = config.load(FIXTURES / "srproxy_old.conf")
    assert settings.proxy.sip_account == "1006"  # from the old name [proxy] account
    assert settings.proxy.sip_pwd == "1234"
    assert settings.rtm2sip.on is False
    joined = "\n".join(settings.warnings)
    for key in ("[ivr] on", "[sip] acc_rule", "[proxy] account", "[proxy] pwd"):
        assert key in joined


def test_defaults_bind_loopback_and_name_no_stun_server() -> None:
    settings = config.defaults()
    assert settings.esl.host == "127.0.0.1"
    assert settings.socket.host == "127.0.0.1"
    assert settings.web.host == "127.0.0.1"
    assert settings.media.unicast_host == "127.0.0.1"
    assert settings.media.host_addresses == ("127.0.0.1",)
    assert settings.media.ice_servers == ()
    assert settings.auth.open_mode is False


def test_rtm_ip_and_port_set_the_web_bind() -> None:
    settings = config.from_text("[rtm]\nip=127.0.0.2\nport=7080\n")
    assert (settings.web.host, settings.web.port) == ("127.0.0.2", 7080)


def test_rtc_and_rtm_disagreeing_is_an_error() -> None:
    problem = only_problem("[rtm]\nport=7080\n[rtc]\nport=6080\n")
    assert problem.key == "port" and "differs" in problem.reason


@pytest.mark.parametrize(
    ("text", "section", "key", "fragment"),
    [
        ("[esl]\nport=abc\n", "esl", "port", "whole number"),
        ("[esl]\nport=70000\n", "esl", "port", "maximum 65535"),
        ("[esl]\nport=0\n", "esl", "port", "minimum 1"),
        ("[log]\nlevel=6\n", "log", "level", "maximum 5"),
        ("[log]\nlevel=-1\n", "log", "level", "minimum 0"),
        ("[log]\nconsole=sometimes\n", "log", "console", "one of"),
        ("[rtm2sip]\non=maybe\n", "rtm2sip", "on", "boolean"),
        ("[rtm2sip]\nacc_rule=10[19-06]\n", "rtm2sip", "acc_rule", "below its start"),
        ("[rtm2sip]\nacc_rule=1005;1005\n", "rtm2sip", "acc_rule", "listed twice"),
        ("[rtm2sip]\nacc_rule=1005;\n", "rtm2sip", "acc_rule", "empty item"),
        ("[rtm2sip]\non=1\n", "rtm2sip", "acc_rule", "is empty"),
        ("[global]\nappid=\n", "global", "appid", "must not be empty"),
        ("[global]\nsip_svr=host:99999\n", "global", "sip_svr", "out of range"),
        ("[global]\nsip_svr=a b\n", "global", "sip_svr", "host:port"),
        ("[global]\ncolour=blue\n", "global", "colour", "unknown key"),
        ("[rtm]\nport=x\n", "rtm", "port", "the value"),
        ("[proxy]\nrtm_account=a b\n", "proxy", "rtm_account", "letters"),
        ("[rtm2sip]\nacc_rule=1086\n", "proxy", "rtm_account", None),
        ("[pstn]\nprefix=9a\n", "pstn", "prefix", "0-9"),
        ("[pstn]\nip=127.0.0.1\ngateway=gw\n", "pstn", "gateway", "not both"),
        ("[media]\nice_servers=stun.example:3478,\n", "media", "ice_servers", "stun:"),
        ("[media]\nice_servers=turn:127.0.0.1:3478,\n", "media", "ice_servers", "turn_username"),
        ("[media]\ncodecs=opus, G729\n", "media", "codecs", "G729"),
        (
            "[media]\nunicast_port_min=30000\nunicast_port_max=30000\n",
            "media",
            "unicast_port_max",
            "pairs",
        ),
        (f"[web]\ntls_cert={__file__}\n", "web", "tls_key", "together"),
        (f"[web]\ntls_cert={__file__}\ntls_key=nokey.pem\n", "web", "tls_key", "no such file"),
        ("[socket]\nport=8080\n", "socket", "port", "share"),
        ("[log]\nfile=/nonexistent-dir/x.log\n", "log", "file", "does not exist"),
    ],
)
def test_each_defect_names_section_key_and_reason(
    text: str, section: str, key: str, fragment: str | None
) -> None:
    if section == "proxy" and key == "rtm_account" and fragment is None:
        text = "[proxy]\nrtm_account=1086\n" + text
        fragment = "acc_rule"
    problem = only_problem(text)
    assert (problem.section, problem.key) == (section, key)
    assert fragment in problem.reason
    message = str(problem)
    assert message.startswith("rtx.conf: ")
    assert f"[{section}] {key} = " in message


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of("[esl]\nport=abc\n[log]\nlevel=9\n[bogus]\nx=1\n[global]\nfoo=1\n")
    where = {(p.section, p.key) for p in problems}
    assert where == {("esl", "port"), ("log", "level"), ("bogus", None), ("global", "foo")}


def test_unknown_section_and_key_outside_section() -> None:
    assert "unknown section" in only_problem("[bogus]\nx=1\n").reason
    assert "outside a section" in only_problem("stray=1\n").reason


def test_syntax_errors_name_the_line() -> None:
    problem = only_problem("[global]\nappid=a\nappid=b\n")
    assert "line 3" in problem.reason
    problem = only_problem("[global\nappid=a\n")
    assert "syntax error" in problem.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "nope.conf")


def test_secret_values_never_appear_in_problems_or_rendering() -> None:
    problem = only_problem("[esl]\npassword=\n")
    assert problem.key == "password"
    settings = config.from_text(
        "[esl]\npassword=TopSecretEsl\n[auth]\napp_certificate=CertSecretValue\n"
        "[proxy]\nsip_pwd=SipPassword9\n[media]\nturn_username=u\nturn_password=TurnPass77\n"
        "ice_servers=turn:127.0.0.1:3478,\n"
    )
    text = config.render(settings)
    for secret in ("TopSecretEsl", "CertSecretValue", "SipPassword9", "TurnPass77"):
        assert secret not in text
        assert secret in settings.secrets()
    assert "password = ***" in text


def test_rendered_settings_load_back_to_the_same_settings() -> None:
    settings = config.load(FIXTURES / "srproxy_repo.conf")
    again = config.from_text(config.render(settings, mask=False), base_dir=FIXTURES)
    assert again.as_sections(mask=False) == settings.as_sections(mask=False)


def test_boolean_flags_accept_srproxy_style_values() -> None:
    for text, expected in (("1", True), ("0", False), ("on", True), ("off", False)):
        assert config.from_text(f"[proxy]\non={text}\n").proxy.on is expected
