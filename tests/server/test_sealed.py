"""Sealed credentials (server/sealed.py): they open only with their key and their context."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from server.sealed import Sealer, SealedError, load_or_create_sealer, new_key_line


def test_a_sealed_value_opens_with_its_context_and_does_not_show_the_secret(tmp_path: Path) -> None:
    sealer = load_or_create_sealer(tmp_path / "keys")
    sealed = sealer.seal("zermelo-token-4711", "timetable-source:3:token")
    assert "zermelo-token-4711" not in sealed
    assert sealer.unseal(sealed, "timetable-source:3:token") == "zermelo-token-4711"
    # The same text sealed twice looks different (a fresh nonce each time).
    assert sealer.seal("zermelo-token-4711", "timetable-source:3:token") != sealed


@pytest.mark.parametrize("context", ["timetable-source:4:token", "timetable-source:3:secret", ""])
def test_a_sealed_value_does_not_open_in_another_row_or_field(tmp_path: Path, context: str) -> None:
    sealer = load_or_create_sealer(tmp_path / "keys")
    sealed = sealer.seal("s3cret", "timetable-source:3:token")
    with pytest.raises(SealedError):
        sealer.unseal(sealed, context)


def _flip_last_character(sealed: str) -> str:
    # Not the very last one: its low bits may be padding that decoding ignores.
    at = len(sealed) - 3
    return sealed[:at] + ("A" if sealed[at] != "A" else "B") + sealed[at + 1:]


@pytest.mark.parametrize("damage", [
    _flip_last_character,
    lambda s: s.replace("v1.", "v2.", 1),
    lambda s: s.split(".")[0] + "." + s.split(".")[1],
    lambda s: s[: len(s) // 2],
    lambda s: "v1.000000000000." + s.split(".")[2],
    lambda s: s.split(".")[0] + "." + s.split(".")[1] + ".!!!!",
    lambda s: "plain text",
])
def test_a_damaged_value_is_refused_in_words(tmp_path: Path, damage) -> None:
    sealer = load_or_create_sealer(tmp_path / "keys")
    sealed = sealer.seal("s3cret", "ctx")
    with pytest.raises(SealedError) as refused:
        sealer.unseal(damage(sealed), "ctx")
    assert "s3cret" not in str(refused.value)


def test_the_key_file_is_made_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "sealing-keys"
    first = load_or_create_sealer(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sealed = first.seal("x", "c")
    assert load_or_create_sealer(path).unseal(sealed, "c") == "x"
    assert [p.name for p in path.parent.iterdir()] == ["sealing-keys"]  # no temporary file left


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "sealing-keys"
    sealers: list[Sealer] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        sealers.append(load_or_create_sealer(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({s.keys for s in sealers}) == 1


def test_a_new_first_key_seals_and_the_old_one_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "sealing-keys"
    old = load_or_create_sealer(path)
    sealed_before = old.seal("old secret", "c")
    path.write_text(new_key_line() + "\n" + path.read_text())
    rotated = load_or_create_sealer(path)
    assert rotated.unseal(sealed_before, "c") == "old secret"
    sealed_after = rotated.seal("new secret", "c")
    with pytest.raises(SealedError, match="key this server does not have"):
        old.unseal(sealed_after, "c")


@pytest.mark.parametrize("content, message", [
    ("", "holds no sealing key"),
    ("# only a comment\n", "holds no sealing key"),
    ("not base64 at all!\n", "line 1: not a base64url key"),
    ("\nc2hvcnQ\n", "line 2: a sealing key is 32 bytes, this one is 5"),
])
def test_a_bad_key_file_is_refused_naming_the_line(tmp_path: Path, content: str,
                                                   message: str) -> None:
    path = tmp_path / "sealing-keys"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_or_create_sealer(path)


def test_the_app_seals_with_the_key_in_its_instance_folder(tmp_path: Path) -> None:
    from server.app import create_app
    from server.sealed import seal, unseal
    app = create_app({"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": "sqlite://"})
    with app.app_context():
        sealed = seal("webuntis-secret", "timetable-source:1:secret")
        assert unseal(sealed, "timetable-source:1:secret") == "webuntis-secret"
    assert (tmp_path / "sealing-keys").is_file()
