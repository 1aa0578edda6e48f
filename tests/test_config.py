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
        ("[media]\ncodecs=sip,\n", "media", "codecs", "besides 'sip'"),
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


# -- values that would crash or silently break run: refused by the one validation path


def spec_keys(check: str) -> list[tuple[str, str]]:
    """(section, key) of every key the configspec checks with ``check``."""
    keys, section = [], ""
    for line in config.CONFIGSPEC.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif f"= {check}(" in line:
            keys.append((section, line.split("=", 1)[0].strip()))
    return keys


FLOAT_KEYS = spec_keys("float")


def test_the_spec_has_the_float_keys_the_tests_walk() -> None:
    assert len(FLOAT_KEYS) >= 9
    assert ("limits", "presence_grace") in FLOAT_KEYS
    assert ("media", "media_timeout") in FLOAT_KEYS


@pytest.mark.parametrize(("section", "key"), FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "inf", "-inf", "1e999"])
def test_every_float_key_refuses_nan_and_inf(section: str, key: str, value: str) -> None:
    problem = only_problem(f"[{section}]\n{key} = {value}\n")
    assert (problem.section, problem.key) == (section, key)
    if "nan" in value.lower():
        assert "not a finite number" in problem.reason


def test_finite_floats_still_load() -> None:
    settings = config.from_text("[limits]\npresence_grace = 2.5\n[media]\nmedia_timeout=1e1\n")
    assert settings.limits.presence_grace == 2.5
    assert settings.media.media_timeout == 10.0


def test_one_way_audio_thresholds_load_with_their_defaults() -> None:
    defaults = config.from_text("").media
    assert (defaults.media_problem_after, defaults.silence_floor_dbov) == (5.0, -70.0)
    media = config.from_text("[media]\nmedia_problem_after = 2\nsilence_floor_dbov = -60\n").media
    assert (media.media_problem_after, media.silence_floor_dbov) == (2.0, -60.0)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("media_problem_after", "0", "below the minimum 1"),
        ("media_problem_after", "0.5", "below the minimum 1"),
        ("media_problem_after", "601", "above the maximum 600"),
        ("media_problem_after", "soon", "not a number"),
        ("silence_floor_dbov", "0", "above the maximum -20"),
        ("silence_floor_dbov", "70", "above the maximum -20"),
        ("silence_floor_dbov", "-130", "below the minimum -120"),
        ("silence_floor_dbov", "quiet", "not a number"),
    ],
)
def test_one_way_audio_thresholds_refuse_bad_values(key: str, value: str, fragment: str) -> None:
    problem = only_problem(f"[media]\n{key} = {value}\n")
    assert (problem.section, problem.key) == ("media", key)
    assert fragment in problem.reason, problem.reason


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    assert config.from_text("").media.event_loop == "uvloop"
    assert config.from_text("[media]\nevent_loop = asyncio\n").media.event_loop == "asyncio"
    problem = only_problem("[media]\nevent_loop = trio\n")
    assert (problem.section, problem.key) == ("media", "event_loop")
    assert "uvloop, asyncio" in problem.reason, problem.reason


@pytest.mark.parametrize("appid", ["my app", "ü", "a\x00b", "a/b", "app:1", "x" * 65])
def test_appid_follows_the_login_frames_rule(appid: str) -> None:
    from esl_bridge.signaling.protocol import valid_appid

    assert not valid_appid(appid)
    problem = only_problem(f"[global]\nappid = '{appid}'\n")
    assert (problem.section, problem.key) == ("global", "appid")


def test_an_appid_the_protocol_accepts_loads() -> None:
    from esl_bridge.signaling.protocol import valid_appid

    assert valid_appid("acme.prod-1_x")
    assert config.from_text("[global]\nappid = acme.prod-1_x\n").global_.appid == "acme.prod-1_x"


@pytest.mark.parametrize("uid", ["a b", "ü", "a\x00b", "x" * 65])
def test_rtm_account_is_a_uid_the_protocol_accepts(uid: str) -> None:
    from esl_bridge.signaling.protocol import valid_uid

    assert not valid_uid(uid)
    problem = only_problem(f"[proxy]\nrtm_account = '{uid}'\n")
    assert (problem.section, problem.key) == ("proxy", "rtm_account")


@pytest.mark.parametrize(
    ("text", "section", "key", "fragment"),
    [
        ("[global]\nsip_svr = %(foo)s\n", "global", "sip_svr", "interpolation"),
        ("[global]\nsip_svr = ${host}:5060\n", "global", "sip_svr", "interpolation"),
        ("[global]\nsip_svr = fs{x}:5060\n", "global", "sip_svr", "host:port"),
        ("[global]\nsip_svr = user@fs\n", "global", "sip_svr", "host:port"),
        ("[esl]\nhost = %(fs)s\n", "esl", "host", "interpolation"),
        ("[web]\nhost = 'a b'\n", "web", "host", "host name"),
        ("[socket]\nhost = -x\n", "socket", "host", "host name"),
        ("[media]\nunicast_host = a/b\n", "media", "unicast_host", "host name"),
        ("[rtc]\nip = 'a}b'\n", "rtc", "ip", "host name"),
        ("[media]\nhost_addresses = localhost,\n", "media", "host_addresses", "IP address"),
        ("[pstn]\nip = 192.0.2.1}\n", "pstn", "ip", "host:port"),
        ("[pstn]\nip = %(gw)s\n", "pstn", "ip", "interpolation"),
        ("[pstn]\ngateway = 'gw}x'\n", "pstn", "gateway", "characters"),
    ],
)
def test_hosts_and_names_that_end_up_in_dial_strings_or_binds(
    text: str, section: str, key: str, fragment: str
) -> None:
    problem = only_problem(text)
    assert (problem.section, problem.key) == (section, key)
    assert fragment in problem.reason


def test_usual_hosts_load() -> None:
    settings = config.from_text(
        "[global]\nsip_svr = fs-1.example_lan:5080\n[esl]\nhost = ::1\n[web]\nhost = localhost\n"
        "[media]\nhost_addresses = 127.0.0.1, ::1\n[pstn]\nip = [2001:db8::1]:5060\n"
    )
    assert settings.global_.sip_domain == "fs-1.example_lan"
    assert settings.pstn.ip == "[2001:db8::1]:5060"


def test_log_file_must_be_a_file(tmp_path: Path) -> None:
    problem = only_problem(f"[log]\nfile = {tmp_path}\n")
    assert (problem.section, problem.key) == ("log", "file")
    assert "is a directory" in problem.reason
    assert "is a directory" in only_problem("[log]\nfile = /proc\n").reason


@pytest.mark.parametrize(("low", "high"), [(30001, 30002), (31000, 30000), (30001, 30001)])
def test_a_unicast_range_without_a_pair_is_refused(low: int, high: int) -> None:
    problem = only_problem(f"[media]\nunicast_port_min={low}\nunicast_port_max={high}\n")
    assert (problem.section, problem.key) == ("media", "unicast_port_max")
    assert "no (even, odd) port pairs" in problem.reason


def test_a_unicast_range_too_small_for_max_calls_is_refused() -> None:
    text = "[media]\nunicast_port_min=30000\nunicast_port_max=30009\n[limits]\nmax_calls={}\n"
    assert config.from_text(text.format(5)).limits.max_calls == 5  # 5 pairs, 5 calls
    problem = only_problem(text.format(6))
    assert (problem.section, problem.key) == ("media", "unicast_port_max")
    assert "holds 5 port pairs, fewer than [limits] max_calls = 6" in problem.reason


def test_pair_count_agrees_with_the_port_allocator() -> None:
    from esl_bridge.media.unicast import PortAllocator

    for low in range(1024, 1030):
        for high in range(1020, 1036):
            pairs = config.unicast_pairs(low, high)
            if pairs == 0:
                with pytest.raises(ValueError):
                    PortAllocator(low, high)
            else:
                assert PortAllocator(low, high).capacity == pairs


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("esl", "password", "'''ClueCon\nevent plain ALL'''"),
        ("proxy", "sip_pwd", "'a\tb'"),
        ("pstn", "gateway", "'gw\x00'"),
        ("media", "codecs", "opus, 'PC\x7fMU'"),
    ],
)
def test_control_characters_are_refused_in_any_value(section: str, key: str, value: str) -> None:
    problem = only_problem(f"[{section}]\n{key} = {value}\n")
    assert (problem.section, problem.key) == (section, key)
    assert "control character" in problem.reason
    assert "ClueCon" not in str(problem)


@pytest.mark.parametrize(
    "url",
    [
        "stun:%(host)s",
        "stun:127.0.0.1:99999",
        "stun:127.0.0.1?transport=udp",
        "turn:[::1]:3478",
        "turn:127.0.0.1:3478?transport=sctp",
        "stun:127.0.0.1:3478/x",
    ],
)
def test_ice_server_urls_aiortc_could_not_use_are_refused(url: str) -> None:
    problem = only_problem(f"[media]\nice_servers = {url},\nturn_username = u\nturn_password = p\n")
    assert (problem.section, problem.key) == ("media", "ice_servers")


def test_usual_ice_server_urls_load_and_parse_in_aiortc() -> None:
    from aiortc.rtcicetransport import parse_stun_turn_uri

    urls = ["stun:127.0.0.1", "stun:stun.lan:3478", "turn:127.0.0.1:3478?transport=tcp"]
    urls.append("turns:turn.lan:5349")
    settings = config.from_text(
        f"[media]\nice_servers = {', '.join(urls)}\nturn_username = u\nturn_password = p\n"
    )
    assert settings.media.ice_servers == tuple(urls)
    for url in urls:
        parse_stun_turn_uri(url)
