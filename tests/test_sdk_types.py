"""The SDK's TypeScript declarations (esl_bridge/web/sdk.d.ts): served, packaged, in step
with sdk.js, and a small example page type-checks against them with ``tsc``.

``tsc`` comes from npm's cache (``npx -y --offline -p typescript``), never from the network:
the check runs inside a loopback-only namespace. Without npx, or without TypeScript in the
cache, it is skipped with the reason; with ``CI=true`` that is a failure instead
(scripts/test.sh, the README's test command, warms the cache).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.netns import loopback_only

from esl_bridge.signaling.server import setup_signaling
from esl_bridge.signaling.settings import SignalingSettings

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "esl_bridge" / "web"
EXAMPLE = ROOT / "tests" / "fixtures" / "sdk" / "example.ts"
NPX = shutil.which("npx") or "/usr/bin/npx"
TSC = [NPX, "-y", "--offline", "-p", "typescript", "tsc"]
TSC_FLAGS = [
    "--noEmit",
    "--strict",
    "--target",
    "es2022",
    "--module",
    "es2022",
    "--moduleResolution",
    "bundler",
    "--lib",
    "es2022,dom",
]

JS_EXPORT = re.compile(r"^export (?:const|class|function|async function) (\w+)", re.M)
DTS_EXPORT = re.compile(r"^export declare (?:const|class|function) (\w+)", re.M)


def test_the_declarations_name_every_export_of_the_sdk() -> None:
    exported = set(JS_EXPORT.findall((WEB / "sdk.js").read_text()))
    declared = set(DTS_EXPORT.findall((WEB / "sdk.d.ts").read_text()))
    assert exported == declared
    assert {"Call", "CallError", "CallErrorCode", "CallState", "createClient"} <= declared
    assert {"Conference", "newConferenceId"} <= declared


def test_sdk_d_ts_is_served_beside_sdk_js_and_packaged() -> None:
    async def main() -> None:
        app = web.Application()
        setup_signaling(app, SignalingSettings(appid="a", open_mode=True))
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            resp = await client.get("/sdk.d.ts")
            assert resp.status == 200
            assert resp.content_type == "application/typescript"
            assert await resp.text() == (WEB / "sdk.d.ts").read_text()
        finally:
            await client.close()

    asyncio.run(main())
    setup = (ROOT / "setup.cfg").read_text()
    assert "web/*" in setup  # [options.package_data]: sdk.d.ts ships in the wheel


def _tsc(tmp: Path, source: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(WEB / "sdk.d.ts", tmp / "sdk.d.ts")
    (tmp / "page.ts").write_text(source)
    return subprocess.run(
        [*TSC, *TSC_FLAGS, "page.ts"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )


def _typescript_or_skip() -> None:
    found = shutil.which("npx") is not None
    why = "npx is missing"
    if found:
        probe = subprocess.run([*TSC, "--version"], capture_output=True, text=True, timeout=300)
        found = probe.returncode == 0
        why = "TypeScript is not in npm's cache (run `npx -y -p typescript tsc --version` once)"
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the sdk.d.ts check cannot run in CI: {why}")
        pytest.skip(why)


@loopback_only(requires=["/usr/bin/unshare"], timeout=300)
def test_an_example_page_type_checks_against_sdk_d_ts(tmp_path: Path) -> None:
    _typescript_or_skip()
    source = EXAMPLE.read_text()
    good = _tsc(tmp_path, source)
    assert good.returncode == 0, good.stdout + good.stderr
    # The check has teeth: wrong uses of the Call are errors.
    bad = source.replace("call.mute(true)", 'call.mute("yes")').replace(
        'ri.accept({ deviceId: "default" })', "ri.accept({ deviceId: 5 })"
    )
    assert bad != source
    wrong = _tsc(tmp_path, bad)
    assert wrong.returncode != 0
    assert "page.ts(" in wrong.stdout and "TS2345" in wrong.stdout, wrong.stdout


# Wrong uses of the conference API that the declarations must reject, one at a time:
# (original text in tests/fixtures/sdk/example.ts, its wrong form, the error expected).
CONFERENCE_MISTAKES = [
    ("room.kick(room.members[1].Id)", "room.kick(room.members[1].Uid)", "TS2345"),
    ("m.Talking && !m.Self", "m.Speaking && !m.Self", "TS2339"),
    ("console.log(err.reason)", "console.log(err.reason.length)", "TS18048"),
    ('{ displayName: "Ann" }', "{ displayName: 7 }", "TS2322"),
    # A conference member's mediaProblem carries the call's verdicts, nothing else.
    ('verdict !== "ok"', 'verdict !== "fine"', "TS2367"),
]


@loopback_only(requires=["/usr/bin/unshare"], timeout=300)
def test_the_conference_api_type_checks_and_rejects_wrong_uses(tmp_path: Path) -> None:
    """joinConference / acceptConference / Conference (members, events, moderator calls)
    in the example page type-check; each wrong use above is an error of its own."""
    _typescript_or_skip()
    source = EXAMPLE.read_text()
    assert "client.joinConference(" in source and "client.acceptConference(" in source
    good = _tsc(tmp_path, source)
    assert good.returncode == 0, good.stdout + good.stderr
    for right, wrong_text, code in CONFERENCE_MISTAKES:
        assert source.count(right) == 1, right
        wrong = _tsc(tmp_path, source.replace(right, wrong_text))
        assert wrong.returncode != 0, wrong_text
        assert "page.ts(" in wrong.stdout and code in wrong.stdout, (wrong_text, wrong.stdout)
