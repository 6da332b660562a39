"""Importing content packs: versions, retirement, and errors that say where."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from content.models import Block, BlockVersion, Layout, LayoutVersion
from content.packs import PackError, import_pack
from tests.packs import block, write_pack

DEMO_PACK = "examples/packs/corner-shop"


def test_demo_pack_imports_cleanly_and_meets_the_brief(session):
    report = import_pack(session, DEMO_PACK)
    assert report.problems == []
    layout = session.scalar(select(Layout).where(Layout.key == "newsletter"))
    version = session.get(LayoutVersion, layout.current_version_id)
    assert len(version.slots) >= 3
    assert "first_name" in version.html
    versions = session.scalars(select(BlockVersion)).all()
    locales = {session.get(Block, v.block_id).locale for v in versions}
    interests = {tag for v in versions for tag in v.interests}
    assert len(versions) >= 30 and {"en", "es"} <= locales and len(interests) >= 6


def test_reimport_versions_only_what_changed_and_retires_what_is_gone(session, tmp_path):
    pack = write_pack(tmp_path / "p", [block("pizza"), block("pasta", interests={"pasta": 1})])
    first = import_pack(session, pack)
    assert first.blocks["created"] == 2
    old = session.scalar(select(Block).where(Block.key == "pizza")).current_version_id

    write_pack(tmp_path / "p", [block("pizza", body="<p>New pizza text</p>")])
    second = import_pack(session, pack)
    assert second.blocks == {"created": 0, "changed": 1, "unchanged": 0, "retired": 1}
    assert second.layouts["unchanged"] == 1
    pizza = session.scalar(select(Block).where(Block.key == "pizza"))
    assert pizza.current_version_id != old
    # The version a run may have used is still there, unchanged.
    assert "pizza (en)" in session.get(BlockVersion, old).html
    assert session.get(BlockVersion, pizza.current_version_id).version == 2
    assert session.scalar(select(Block).where(Block.key == "pasta")).retired_at is not None


def test_a_bad_block_is_skipped_with_file_line_and_field_and_the_rest_imports(session, tmp_path):
    pack = write_pack(
        tmp_path / "p",
        [
            block("good"),
            block("bad-weight", interests={"pizza": -1}),
            block("bad-slot", slots=("sidebar",)),
            block("bad-template", body="<p>{{ contact.first_name </p>\n"),
        ],
    )
    report = import_pack(session, pack)
    assert report.blocks["created"] == 1
    problems = {p.path.rsplit("/", 1)[-1]: p for p in report.problems}
    assert set(problems) == {"bad-weight.html", "bad-slot.html", "bad-template.html"}
    assert problems["bad-weight.html"].field == "interests.pizza"
    assert problems["bad-weight.html"].line == 5  # the front matter's interests line
    assert problems["bad-slot.html"].field == "slots" and "sidebar" in problems["bad-slot.html"].message
    assert problems["bad-template.html"].line == 10 and "template error" in problems["bad-template.html"].message
    assert "bad-weight.html, line 5: field 'interests.pizza'" in str(problems["bad-weight.html"])


def test_a_broken_manifest_or_layout_stops_the_import_naming_the_file(session, tmp_path):
    pack = write_pack(tmp_path / "p", [block("good")], default_locale="not a locale!")
    with pytest.raises(PackError, match=r"pack.yaml: field 'default_locale'"):
        import_pack(session, pack)
    pack = write_pack(tmp_path / "q", [block("good")], layout="<p>{{ slots.hero }}</p>")
    with pytest.raises(PackError, match=r"mail.html: declares slots never used in the layout: offer"):
        import_pack(session, pack)
    with pytest.raises(PackError, match="not found"):
        import_pack(session, tmp_path)


def test_a_pack_name_or_block_title_with_a_control_or_invisible_character_is_refused(session, tmp_path):
    pack = write_pack(tmp_path / "p", [block("good")], name="Corner\u202eShop")
    with pytest.raises(PackError, match=r"pack.yaml: field 'name': must not contain the invisible bidirectional"):
        import_pack(session, pack)
    pack = write_pack(tmp_path / "q", [block("good"), block("bad", title="Pizza\nnight")])
    report = import_pack(session, pack)
    assert report.blocks["created"] == 1
    (problem,) = report.problems
    assert problem.field == "title" and problem.message.startswith("must not contain a line break")


def test_manifest_paths_cannot_leave_the_pack(session, tmp_path):
    (tmp_path / "secret.html").write_text("{{ slots.hero }}{{ slots.offer }}")
    pack = write_pack(tmp_path / "p", [block("good")])
    text = (pack / "pack.yaml").read_text().replace("layouts/mail.html", "../secret.html")
    (pack / "pack.yaml").write_text(text)
    with pytest.raises(PackError, match="outside the pack"):
        import_pack(session, pack)


def test_a_block_broken_in_a_reimport_keeps_its_working_version(session, tmp_path):
    pack = write_pack(tmp_path / "p", [block("pizza"), block("pasta", interests={"pasta": 1})])
    import_pack(session, pack)
    working = session.scalar(select(Block).where(Block.key == "pasta")).current_version_id
    write_pack(tmp_path / "p", [block("pizza"), block("pasta", interests={"pasta": 1}, body="{% if %}")])
    report = import_pack(session, pack)
    assert report.blocks["retired"] == 0 and len(report.problems) == 1
    pasta = session.scalar(select(Block).where(Block.key == "pasta"))
    assert pasta.retired_at is None and pasta.current_version_id == working
