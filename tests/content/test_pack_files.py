"""A pack reads only itself: every file it names or holds is refused when it is a link, not a plain file,
too large, or outside the pack — and what lies outside never reaches the database or an email."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from content.models import Block, Pack
from content.packfiles import MAX_FILE_BYTES
from content.packs import PackError, import_pack
from segments.db import Base
from tests.campaigns.conftest import CAMPAIGN, add_contacts
from tests.packs import LAYOUT, block, write_pack

SECRET = "PATRON_SECRET_KEY=fake-secret-9b1e4c0d-7a2f-4e11-bb05-c0ffee"
PATRON = Path(sys.executable).parent / "patron"
LEAK = block("leak", priority=5.0)  # a good block, preferred to "good" if it were ever imported


def block_file(spec: dict, body: str) -> str:
    return f"---\n{yaml.safe_dump(spec['front'], sort_keys=False)}---\n{body}"


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files beside the pack, never part of it, each holding the secret in a form its kind of file would import."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "leak.html").write_text(block_file(LEAK, f"<p>{SECRET}</p>\n"))
    (folder / "leak.txt").write_text(SECRET + "\n")
    (folder / "mail.html").write_text(LAYOUT.replace("</body>", f"{SECRET}</body>"))
    (folder / "mail.txt").write_text("{{ slots.hero }}{{ slots.offer }} " + SECRET)
    (folder / "style.css").write_text(f"p {{ margin: 0 }} /* {SECRET} */")
    manifest = (write_pack(tmp_path / "model", []) / "pack.yaml").read_text()
    (folder / "pack.yaml").write_text(manifest.replace("Test pack", SECRET))
    (folder / "sub").mkdir()
    (folder / "sub" / "leak.html").write_text(block_file(LEAK, f"<p>{SECRET}</p>\n"))
    return folder


@pytest.fixture
def pack(tmp_path) -> Path:
    return write_pack(tmp_path / "pack", [block("good")])


def edit_layout(pack: Path, **fields) -> None:
    manifest = yaml.safe_load((pack / "pack.yaml").read_text())
    manifest["layouts"][0].update(fields)
    (pack / "pack.yaml").write_text(yaml.safe_dump(manifest))


def edit_manifest(pack: Path, **fields) -> None:
    manifest = yaml.safe_load((pack / "pack.yaml").read_text())
    manifest.update(fields)
    (pack / "pack.yaml").write_text(yaml.safe_dump(manifest))


def replace_with(path: Path, how: str, target: Path) -> None:
    """Put a symbolic link, a hard link or a FIFO at ``path`` (whatever was there is gone)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    {
        "symlink": lambda: path.symlink_to(target),
        "hardlink": lambda: os.link(target, path),
        "fifo": lambda: os.mkfifo(path),
    }[how]()


def swap_folder(folder: Path, target: Path) -> None:
    """Replace the pack's ``folder`` by a symbolic link to ``target`` holding the same names."""
    for child in folder.iterdir():
        if not (target / child.name).exists():
            (target / child.name).write_bytes(child.read_bytes()) if child.is_file() else None
    for child in sorted(folder.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    folder.rmdir()
    folder.symlink_to(target, target_is_directory=True)


def secret_in_database(session) -> bool:
    """Whether any column of any row of any table holds the secret."""
    session.expire_all()
    for table in Base.metadata.sorted_tables:
        for row in session.execute(table.select()):
            if any(SECRET in str(value) for value in row):
                return True
    return False


WHY = {"symlink": "is a symbolic link", "hardlink": "has 2 hard links", "fifo": "is not a regular file"}
# Each kind of file a pack reads: where it lies in the pack, the file outside holding the secret in its form,
# and what makes the pack read it.
PACK_FILES = {
    "manifest": ("pack.yaml", "pack.yaml", None),
    "layout": ("layouts/mail.html", "mail.html", None),
    "layout text": ("layouts/mail.txt", "mail.txt", lambda p: edit_layout(p, text="layouts/mail.txt")),
    "css": ("style.css", "style.css", None),
}
BLOCK_FILES = {
    "block": ("blocks/en/leak.html", "leak.html", None),
    "block text": ("blocks/en/leak.txt", "leak.txt", lambda p: _good_leak(p)),
}


def linked(files: dict) -> dict:
    """Every kind of file replaced by a symbolic link, a hard link and a FIFO: (arrange, where, why) by name."""
    cases = {}
    for kind, (where, target, prepare) in files.items():
        for how, why in WHY.items():

            def arrange(p, o, where=where, target=target, prepare=prepare, how=how):
                if prepare:
                    prepare(p)
                replace_with(p / where, how, o / target)

            cases[f"{kind} {how}"] = (arrange, where, why)
    return cases


# Whole-pack files: a bad one refuses the pack.
PACK_CASES = linked(PACK_FILES) | {
    "layout folder symlink": (lambda p, o: swap_folder(p / "layouts", o), "layouts", "symbolic link"),
    "blocks folder symlink": (lambda p, o: swap_folder(p / "blocks", o), "blocks", "symbolic link"),
    "css too large": (
        lambda p, o: (p / "style.css").write_text("p{}" * (MAX_FILE_BYTES // 3 + 1)),
        "style.css",
        "larger than 1024 KiB",
    ),
}
# Paths the manifest names that leave the pack: refused on pack.yaml's field, before anything is opened.
MANIFEST_CASES = {
    "html ../": ({"html": "../outside/mail.html"}, "layouts[mail].html", "points outside the pack"),
    "html absolute": (None, "layouts[mail].html", "is an absolute path"),
    "text absolute": ({"text": "/proc/self/environ"}, "layouts[mail].text", "is an absolute path"),
    "css ../ inside a folder": ({"css": ["layouts/../../outside/style.css"]}, "layouts[mail].css", "points outside"),
    "css absolute": (None, "layouts[mail].css", "is an absolute path"),
    "blocks ../": ("../outside", "blocks", "points outside the pack"),
    "blocks absolute": ("/etc", "blocks", "is an absolute path"),
}
# Files inside the blocks folder: a bad one skips its block only.
BLOCK_CASES = linked(BLOCK_FILES) | {
    "block text to /proc/self/environ": (
        lambda p, o: (_good_leak(p), (p / "blocks/en/leak.txt").symlink_to("/proc/self/environ")),
        "blocks/en/leak.txt",
        "symbolic link",
    ),
    "block subfolder symlink": (lambda p, o: (p / "blocks/more").symlink_to(o / "sub"), "blocks/more", "symbolic link"),
    "block too large": (
        lambda p, o: (p / "blocks/en/leak.html").write_text(block_file(LEAK, "<p>x</p>" * (MAX_FILE_BYTES // 8))),
        "blocks/en/leak.html",
        "larger than 1024 KiB",
    ),
}


def _good_leak(pack: Path) -> None:
    (pack / "blocks/en/leak.html").write_text(block_file(LEAK, "<p>Leak</p>\n"))


@pytest.mark.parametrize("case", PACK_CASES)
def test_a_linked_or_odd_pack_file_refuses_the_pack_naming_it(session, pack, outside, case):
    arrange, where, why = PACK_CASES[case]
    arrange(pack, outside)
    with pytest.raises(PackError) as raised:
        import_pack(session, pack)
    problem = raised.value.problem
    assert problem.path == str(pack / where) and why in problem.message, str(raised.value)
    assert SECRET not in str(raised.value)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Pack)) == 0 and not secret_in_database(session)


@pytest.mark.parametrize("case", MANIFEST_CASES)
def test_a_manifest_path_outside_the_pack_is_refused_on_its_field(session, pack, outside, case):
    change, field, why = MANIFEST_CASES[case]
    if case == "html absolute":
        change = {"html": str(outside / "mail.html")}
    if case == "css absolute":
        change = {"css": [str(outside / "style.css")]}
    edit_manifest(pack, blocks=change) if field == "blocks" else edit_layout(pack, **change)
    with pytest.raises(PackError) as raised:
        import_pack(session, pack)
    problem = raised.value.problem
    assert (problem.path, problem.field) == (str(pack / "pack.yaml"), field) and why in problem.message, problem
    assert SECRET not in str(raised.value)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Pack)) == 0


@pytest.mark.parametrize("case", BLOCK_CASES)
def test_a_linked_or_odd_block_file_skips_that_block_alone(session, pack, outside, case):
    arrange, where, why = BLOCK_CASES[case]
    arrange(pack, outside)
    report = import_pack(session, pack)
    session.commit()
    assert [(p.path, why in p.message) for p in report.problems] == [(str(pack / where), True)], report.problems
    assert session.scalars(select(Block.key)).all() == ["good"]
    assert not secret_in_database(session)


def test_the_database_check_finds_the_secret_when_it_is_really_imported(session, pack, outside):
    """The control for the tests above: the same block as a plain file of the pack does bring the secret in."""
    (pack / "blocks/en/leak.html").write_text((outside / "leak.html").read_text())
    assert import_pack(session, pack).problems == []
    session.commit()
    assert secret_in_database(session)


def test_a_name_that_is_a_folder_or_missing_is_named(session, pack):
    edit_layout(pack, css=["layouts"])
    with pytest.raises(PackError, match=r"/layouts: is a folder, not a file"):
        import_pack(session, pack)
    edit_layout(pack, css=["nowhere/style.css"])
    with pytest.raises(PackError, match=r"pack.yaml: field 'layouts\[mail\].css': 'nowhere/style.css' does not exist"):
        import_pack(session, pack)


def test_a_path_that_wanders_but_stays_inside_is_read(session, pack):
    edit_layout(pack, css=["layouts/../style.css"])
    assert import_pack(session, pack).layouts["created"] == 1


# --- the command, as an operator runs it ------------------------------------------------------------------------


def patron(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PATRON), *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def patron_env(engine, tmp_path) -> dict:
    return {
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATRON_SECRET_KEY": SECRET.split("=", 1)[1],
    }


def test_the_command_refuses_a_linked_layout_in_one_line(engine, pack, outside, tmp_path):
    replace_with(pack / "layouts/mail.html", "symlink", outside / "mail.html")
    result = patron("content", "import", str(pack), env=patron_env(engine, tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result
    assert (
        result.stderr == f"Error: {pack}/layouts/mail.html: is a symbolic link: "
        "a pack may not contain links, which could reach any file of the server\n"
    )
    assert "Traceback" not in result.stdout + result.stderr and SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("text_part", ["link to /proc/self/environ", "plain file (control)"])
def test_a_block_text_linked_to_the_environment_mails_no_secret(engine, session, runner, pack, tmp_path, text_part):
    """The issue's example: a block's .txt linked to /proc/self/environ, imported by the real command with
    PATRON_SECRET_KEY set, then previewed and sent. The control, a plain .txt holding the same line, shows
    the checks would see the secret if it got through."""
    write_pack(pack, [block("good", body="<p>Good block</p>\n"), LEAK])
    (pack / "blocks/en/leak.html").write_text(block_file(LEAK, "<p>Leak block</p>\n"))
    if text_part.startswith("link"):
        (pack / "blocks/en/leak.txt").symlink_to("/proc/self/environ")
    else:
        (pack / "blocks/en/leak.txt").write_text(SECRET + "\n")
    imported = patron("content", "import", str(pack), "--json", env=patron_env(engine, tmp_path), cwd=tmp_path)
    assert imported.returncode == 0 and "Traceback" not in imported.stderr, imported
    report = json.loads(imported.stdout)
    add_contacts(session, [{"email": "ana@example.com", "first_name": "Ana", "interests": {"pizza": 3}}])
    definition = {**CAMPAIGN, "subject": "Hi"}
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(definition))
    created = runner.invoke(args=["campaigns", "create", str(tmp_path / "campaign.yaml"), "--json"])
    assert created.exit_code == 0, created.output
    campaign_id = str(json.loads(created.output)["id"])
    preview = runner.invoke(args=["campaigns", "preview", campaign_id, "--contact", "ana@example.com"])
    sent = runner.invoke(args=["campaigns", "send", campaign_id, "--wait"])
    assert preview.exit_code == sent.exit_code == 0, preview.output + sent.output
    box = mailbox.Maildir(Path(runner.app.instance_path) / "outbox", factory=None, create=False)
    messages = [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]
    assert len(messages) == 1
    parts = [part.get_content() for part in messages[0].walk() if part.get_content_maintype() == "text"]
    seen = preview.output + "".join(parts)

    if text_part.startswith("link"):
        assert [(p["path"], p["message"].split(":")[0]) for p in report["problems"]] == [
            (f"{pack}/blocks/en/leak.txt", "is a symbolic link")
        ]
        assert "Good block" in seen and "Leak block" not in seen
        assert SECRET.split("=")[1] not in seen and not secret_in_database(session)
    else:
        assert report["problems"] == [] and SECRET in seen and secret_in_database(session)
