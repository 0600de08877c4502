"""Instance ids: one safe set at every entry point; model folders that no two ids share."""

from __future__ import annotations

import re

import pytest

from forecasting.ids import MAX_ID_LENGTH, InstanceIdError, check_instance_id, folder_name
from forecasting.settings import SettingsError, load_settings

GOOD = ["i-0abc1234def567890", "i-0de00000000000000", "web-1", "db.prod:1", "A" * MAX_ID_LENGTH, "upload"]
HOSTILE = [
    "../etc",
    "..",
    ".hidden",
    "-flag",
    "",
    "i-a/b",
    "i-a b",
    "i-a\\b",
    "i-1\nforged",
    "i-\x00",
    "i-\x1b[31m",
    "a" * (MAX_ID_LENGTH + 1),
    "x" * 10_000,
    "i-é",
]


@pytest.mark.parametrize("instance_id", GOOD)
def test_safe_ids_pass_unchanged(instance_id: str) -> None:
    assert check_instance_id(instance_id) == instance_id


@pytest.mark.parametrize("instance_id", HOSTILE)
def test_hostile_ids_are_refused_in_one_line_that_shows_them_escaped(instance_id: str) -> None:
    with pytest.raises(InstanceIdError) as caught:
        check_instance_id(instance_id)
    message = str(caught.value)
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message and len(message) < 250


def test_ids_that_differ_only_in_punctuation_get_different_readable_folders() -> None:
    ids = ["i-a/b", "i-a:b", "i-a b", "i-a_b", "i-a.b", "i-ab", "I-A_B", "A" * 64, "A" * 63]
    names = [folder_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}-[0-9a-f]{16}", name) for name in names)
    assert folder_name("i-0abc1234def567890").startswith("i-0abc1234def567890-")
    assert folder_name("i-a:b") == folder_name("i-a:b")  # stable across runs


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("field", ["instances", "thresholds"])
def test_settings_refuse_hostile_ids(field: str) -> None:
    value = ["i-1", "../x"] if field == "instances" else {"../x": 50}
    with pytest.raises(SettingsError, match=rf"invalid setting HEADROOM_{field.upper()}.*invalid instance id '../x'"):
        load_settings(**{field: value})
