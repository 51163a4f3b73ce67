"""Playbooks as versioned configuration: the shipped file, picking per level, errors that say where."""

from __future__ import annotations

import pytest
import yaml

from salesml.settings import Settings
from serving.playbooks import LEVELS, SHIPPED, PlaybookError, load_playbooks, parse_playbooks, read_playbooks


def test_shipped_file_has_one_playbook_per_level_from_the_brief():
    books = load_playbooks()
    assert books.version == "1" and books.source == str(SHIPPED)
    by_level = {lv: [p.id for p in books.for_level(lv)] for lv in LEVELS}
    assert by_level == {"green": ["monitor"], "yellow": ["self-service-guide"], "orange": ["csm-call"],
                        "red": ["executive-response"]}
    assert "troubleshooting guide" in books.get("self-service-guide").title
    assert "executive" in books.get("executive-response").title.lower()
    assert all(p.steps for p in books.items)


def test_settings_point_to_a_projects_own_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"version": "2026-q4", "playbooks": [
        {"id": "call", "title": "Call", "steps": ["call them"], "levels": ["yellow", "orange", "red"]}]}))
    books = load_playbooks(Settings(home=tmp_path, playbooks_file=path))
    assert books.version == "2026-q4" and [p.id for p in books.items] == ["call"]
    assert books.pick("red").playbook.id == "call"


def _books(*specs):
    return parse_playbooks({"version": 3, "playbooks": [
        {"id": i, "title": i, "steps": ["do it"], "levels": list(levels)} for i, levels in specs]}, "test.yaml")


def test_pick_offers_the_first_playbook_that_is_not_frozen():
    books = _books(("a", ["orange"]), ("b", ["orange", "red"]), ("c", ["red"]))
    assert books.pick("orange").playbook.id == "a"
    offer = books.pick("orange", frozen={"a"})
    assert offer.playbook.id == "b" and offer.version == "3" and offer.note is None
    none = books.pick("orange", frozen={"a", "b"})
    assert none.playbook is None and "frozen" in none.note and "a, b" in none.note
    missing = books.pick("yellow")
    assert missing.playbook is None and "no playbook is configured for level yellow" in missing.note
    with pytest.raises(ValueError, match="unknown level"):
        books.pick("purple")


GOOD = {"id": "csm-call", "title": "CSM call", "steps": ["call"], "levels": ["orange"]}


@pytest.mark.parametrize("data, playbook, field, message", [
    ({"playbooks": [GOOD]}, None, "version", "Field required"),
    ({"version": 1, "playbooks": [GOOD, {**GOOD, "id": "x", "levels": ["purple"]}]}, "x", "levels.0", "green"),
    ({"version": 1, "playbooks": [{k: v for k, v in GOOD.items() if k != "steps"}]}, "csm-call", "steps",
     "Field required"),
    ({"version": 1, "playbooks": [{**GOOD, "steps": []}]}, "csm-call", "steps", "at least 1"),
    ({"version": 1, "playbooks": [{**GOOD, "steps": ["  "]}]}, "csm-call", "steps", "some text"),
    ({"version": 1, "playbooks": [GOOD, {k: v for k, v in GOOD.items() if k != "id"}]}, "#2", "id", "required"),
    ({"version": 1, "playbooks": [{**GOOD, "step": ["typo"]}]}, "csm-call", "step", "Extra inputs"),
    ({"version": 1, "playbooks": [GOOD, GOOD]}, "csm-call", "id", "more than one playbook"),
    ({"version": 1, "playbooks": [{**GOOD, "levels": ["red", "red"]}]}, "csm-call", "levels", "twice"),
])
def test_a_bad_file_names_file_playbook_and_field(tmp_path, data, playbook, field, message):
    path = tmp_path / "playbooks.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlaybookError) as err:
        read_playbooks(path)
    e = err.value
    assert (e.file, e.playbook, e.field) == (str(path), playbook, field)
    assert str(path) in str(e) and message in str(e)
    if playbook:
        assert f"playbook {playbook}" in str(e) and f"field {field}" in str(e)


@pytest.mark.parametrize("text, message", [("version: [1\n", "not valid YAML"), ("- a\n- b\n", "a mapping")])
def test_unreadable_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PlaybookError, match=message) as err:
        read_playbooks(path)
    assert err.value.file == str(path)
    with pytest.raises(PlaybookError, match="cannot be read"):
        read_playbooks(tmp_path / "absent.yaml")
