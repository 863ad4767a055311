"""Static properties of the extension package: bundled data equal to the server's, only the
`storage` permission, matching locales, the managed schema covering every setting, no remote code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "extension"


def load(path: Path) -> dict:
    """A JSON file of the repository."""
    return json.loads(path.read_text(encoding="utf-8"))


def test_bundled_reminders_equal_the_servers_defaults() -> None:
    assert load(EXT / "data" / "reminders.json") == load(
        ROOT / "server" / "data" / "reminders.json"
    )


def test_bundled_reminders_cover_every_article_and_language() -> None:
    reminders = load(EXT / "data" / "reminders.json")["reminders"]
    articles = {r["article"] for r in reminders}
    assert {"A1", "A2", "A3", "A4", "A5", "A7", "B1", "B2", "B3", "B4", "B5"} <= articles
    for r in reminders:
        assert set(r["texts"]) == {"nl", "en"}
        assert f"article {r['article']}" in r["texts"]["en"]
        assert f"artikel {r['article']}" in r["texts"]["nl"]


def test_manifest_asks_only_for_storage_and_its_host_matches() -> None:
    manifest = load(EXT / "manifest.json")
    assert manifest["manifest_version"] == 3
    assert manifest["permissions"] == ["storage"]
    assert "host_permissions" not in manifest and "optional_permissions" not in manifest
    assert "web_accessible_resources" not in manifest
    assert manifest["background"]["type"] == "module"
    assert manifest["browser_specific_settings"]["gecko"]["id"]
    assert manifest["default_locale"] == "nl"
    sites = {
        Path(script).stem
        for entry in manifest["content_scripts"]
        for script in entry["js"]
        if script.startswith("content/sites/")
    }
    assert sites == {
        "x",
        "facebook",
        "instagram",
        "youtube",
        "linkedin",
        "whatsapp",
        "tiktok",
        "snapchat",
    }
    for entry in manifest["content_scripts"]:
        assert entry["run_at"] == "document_start"
        assert entry["js"][:3] == ["data/first_names.js", "content/checks.js", "content/core.js"]
        assert all(m.startswith("https://") for m in entry["matches"])
        for script in entry["js"]:
            assert (EXT / script).is_file(), script


def test_locales_have_the_same_messages() -> None:
    nl = load(EXT / "_locales" / "nl" / "messages.json")
    en = load(EXT / "_locales" / "en" / "messages.json")
    assert set(nl) == set(en)
    assert nl["lang"]["message"] == "nl" and en["lang"]["message"] == "en"
    assert (
        nl["editButton"]["message"] == "Aanpassen"
        and nl["postButton"]["message"] == "Toch plaatsen"
    )


def test_managed_schema_covers_every_setting_of_the_background() -> None:
    schema = load(EXT / "managed_schema.json")
    config_js = (EXT / "background" / "config.js").read_text(encoding="utf-8")
    defaults = re.search(r"DEFAULTS = Object.freeze\(\{(.*?)\}\);", config_js, re.DOTALL)
    assert defaults
    keys = set(re.findall(r"^\s*(\w+):", defaults.group(1), re.MULTILINE))
    assert (
        keys
        == set(schema["properties"])
        == {
            "serverUrl",
            "audience",
            "school",
            "schoolName",
            "schoolAliases",
            "locale",
            "snoozeMinutes",
            "onlyOnFindings",
            "userMayChange",
        }
    )


@pytest.mark.parametrize("path", sorted(p.relative_to(EXT).as_posix() for p in EXT.rglob("*.js")))
def test_no_remote_code_or_analytics(path: str) -> None:
    source = (EXT / path).read_text(encoding="utf-8")
    assert not re.search(r"\beval\s*\(|new Function\s*\(|importScripts\s*\(", source)
    assert not re.search(
        r"https?://(?!lesfocus\.example\.nl)[a-z0-9.-]+\.[a-z]{2,}", source
    ), "no hard-coded remote address: the configured server is the only one"
    assert "sendBeacon" not in source and "XMLHttpRequest" not in source
