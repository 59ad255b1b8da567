"""``llm`` inputs given to a consortium: attachments and fragments reach every
member; ``--schema`` is refused by ``llm`` (documented in the README)."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import fake_models

CALLS = fake_models.ScriptedModel.calls

# The PNG signature and an IHDR chunk header are enough to be sniffed as image/png.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"

MODELS = {
    "alpha": {"answer": "A red square"},
    "beta": {"answer": "A red square"},
    "text-only": {"answer": "I cannot see it", "attachment_types": []},
    "judge": {"arbiter": True},
}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "square.png"
    path.write_bytes(PNG)
    return path


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("NOTES: the square is red.")
    return path


@pytest.fixture
def style(tmp_path):
    path = tmp_path / "style.txt"
    path.write_text("STYLE: answer in five words.")
    return path


def save(cli, *members):
    args = [arg for member in members for arg in ("-m", member)]
    result = cli("consortium", "save", "team", *args, "--arbiter", "judge")
    assert result.exit_code == 0, result.output


def rows(user_dir, sql):
    path = user_dir / "consortium_logs.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def test_an_attachment_reaches_every_member_but_not_the_arbiter(cli, fakes, image):
    with fakes(MODELS):
        save(cli, "alpha:2", "beta")
        result = cli("-m", "team", "-a", str(image), "What is this?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "A red square\n"
    member_calls = CALLS["alpha"] + CALLS["beta"]
    assert len(member_calls) == 3
    assert all(call["attachments"] == ["image/png"] for call in member_calls)
    assert all(call["prompt"] == "What is this?" for call in member_calls)
    # The arbiter judges the members' answers; it is not sent the files.
    assert [call["attachments"] for call in CALLS["judge"]] == [[]]


def test_a_member_that_cannot_take_the_attachment_is_reported_not_fatal(cli, fakes, image, user_dir):
    with fakes(MODELS):
        save(cli, "alpha", "text-only")
        result = cli("-m", "team", "-a", str(image), "What is this?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "A red square\n"
    [line] = result.stderr.splitlines()
    assert line.startswith("llm-consortium: member text-only[0] failed: ")
    assert line.endswith("This model does not support attachments")
    members = rows(user_dir, "select model, status, error from consortium_members where role != 'arbiter' order by position")
    assert [(m["model"], m["status"]) for m in members] == [("alpha", "ok"), ("text-only", "failed")]
    assert "does not support attachments" in members[1]["error"]


def test_an_attachment_type_the_consortium_does_not_accept_is_refused_by_llm(cli, fakes, tmp_path, user_dir):
    archive = tmp_path / "data.bin"
    archive.write_bytes(b"\x00\x01")
    with fakes(MODELS):
        save(cli, "alpha")
        result = cli("-m", "team", "--at", str(archive), "application/octet-stream", "What is this?")
    assert result.exit_code == 1
    assert "does not support attachments of type 'application/octet-stream'" in result.stderr
    assert rows(user_dir, "select * from consortium_runs") == []


def test_fragments_and_system_fragments_reach_every_member_and_the_arbiter(cli, fakes, notes, style, user_dir):
    with fakes(MODELS):
        save(cli, "alpha", "beta")
        result = cli("-m", "team", "-f", str(notes), "--sf", str(style), "What colour?")
    assert result.exit_code == 0, result.output
    for call in CALLS["alpha"] + CALLS["beta"]:
        assert call["prompt"] == "NOTES: the square is red.\nWhat colour?"
        assert "STYLE: answer in five words." in call["system"]
    [arbiter_call] = CALLS["judge"]
    assert "NOTES: the square is red." in arbiter_call["prompt"]
    assert "STYLE: answer in five words." in arbiter_call["prompt"]
    [run] = rows(user_dir, "select user_prompt, system_prompt from consortium_runs")
    assert run["user_prompt"] == "NOTES: the square is red.\nWhat colour?"
    assert run["system_prompt"] == "STYLE: answer in five words."


def test_schema_is_refused_with_one_clear_error(cli, fakes, user_dir):
    with fakes(MODELS):
        save(cli, "alpha")
        result = cli("-m", "team", "--schema", "name, age int", "Invent a person")
    assert result.exit_code == 1
    assert "does not support schemas" in result.stderr
    assert "Traceback" not in result.output
    assert rows(user_dir, "select * from consortium_runs") == []


def test_consortium_run_passes_attachments_and_fragments_to_every_member(cli, fakes, image, notes, style):
    with fakes(MODELS):
        result = cli(
            "consortium", "run", "What colour?", "-m", "alpha:2", "--arbiter", "judge",
            "-a", str(image), "-f", str(notes), "--sf", str(style), "--system", "Be kind.",
        )
    assert result.exit_code == 0, result.output
    assert result.stdout == "A red square\n"
    assert len(CALLS["alpha"]) == 2
    for call in CALLS["alpha"]:
        assert call["attachments"] == ["image/png"]
        assert call["prompt"] == "NOTES: the square is red.\nWhat colour?"
        assert "STYLE: answer in five words.\n\nBe kind." in call["system"]


def test_consortium_run_attachment_type_and_a_failing_member(cli, fakes, image):
    with fakes(MODELS):
        result = cli(
            "consortium", "run", "What is this?", "-m", "alpha", "-m", "text-only",
            "--at", str(image), "image/png",
        )
    assert result.exit_code == 0, result.output
    assert result.stdout == "A red square\n"
    [line] = result.stderr.splitlines()
    assert line.startswith("llm-consortium: member text-only[0] failed: ")
    assert "does not support attachments" in line


def test_consortium_run_missing_attachment_or_fragment_is_a_usage_error(cli, fakes, tmp_path, user_dir):
    with fakes(MODELS):
        missing_file = cli("consortium", "run", "Q?", "-m", "alpha", "-a", str(tmp_path / "nope.png"))
        missing_fragment = cli("consortium", "run", "Q?", "-m", "alpha", "-f", str(tmp_path / "nope.txt"))
    assert (missing_file.exit_code, missing_fragment.exit_code) == (2, 2)
    assert "does not exist" in missing_file.stderr
    assert "not found" in missing_fragment.stderr
    assert rows(user_dir, "select * from consortium_runs") == []


def test_csv_attachments_reach_members_by_name_in_run_and_by_type_in_llm_m(cli, fakes, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("city,country\nParis,France\n")
    models = {"sheet": {"answer": "Paris", "attachment_types": ["text/csv"]}, "judge": {"arbiter": True}}
    with fakes(models):
        # llm sniffs file contents and cannot tell CSV: `consortium run -a` goes by the name ...
        run = cli("consortium", "run", "Which city?", "-m", "sheet", "--arbiter", "judge", "-a", str(table))
        assert run.exit_code == 0, run.output
        assert [call["attachments"] for call in CALLS["sheet"]] == [["text/csv"]]
        # ... and `llm -m NAME` takes it with its type given, as the docs say.
        assert cli("consortium", "save", "team", "-m", "sheet", "--arbiter", "judge").exit_code == 0
        typed = cli("-m", "team", "--at", str(table), "text/csv", "Which city?")
    assert typed.exit_code == 0, typed.output
    assert typed.stdout == "Paris\n"
    assert [call["attachments"] for call in CALLS["sheet"]] == [["text/csv"], ["text/csv"]]
