"""Workers die with their parent (issue #8, item 8): after ``kill -9`` of ``campaigns send --wait
--workers 2``, the pool's processes end within seconds, and resuming finishes the run with nobody
mailed twice. Real processes, a real SIGKILL, a slow real SMTP server; processes are read from /proc.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from campaigns.batches import SEND_AHEAD
from segments.models import Consent, Contact
from tests.campaigns.conftest import add_campaign, patron_environment
from tests.delivery.faulty_smtp import FaultySmtp

RECIPIENTS = 1200  # two batches of 500 and one of 200: both workers busy

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


def children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def patron(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_kill_9_of_the_parent_ends_its_workers_and_resume_finishes_the_run(session, engine, tmp_path, pack):
    session.execute(
        insert(Contact),
        [{"email": f"o{i:05d}@example.com", "status": "active", "attributes": {}} for i in range(RECIPIENTS)],
    )
    ids = session.scalars(select(Contact.id)).all()
    session.execute(insert(Consent), [{"contact_id": i, "purpose": "marketing", "granted": True} for i in ids])
    session.commit()
    campaign = add_campaign(session)
    with FaultySmtp(lambda number, recipient: "slow_reply") as server:
        env = patron_environment(engine, tmp_path, server.url)
        parent = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "campaigns", "send", str(campaign.id), "--wait", "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while server.connections < 2 or len(server.messages) < 4:  # both workers sending
            assert parent.poll() is None, parent.stderr.read().decode()
            assert time.monotonic() < deadline, f"the workers never both sent: {server.connections} connection(s)"
            time.sleep(0.05)
        workers = children(parent.pid)
        assert len(workers) >= 2, workers
        parent.send_signal(signal.SIGKILL)
        parent.wait()

        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers outlived their parent: {[p for p in workers if alive(p)]}"
            time.sleep(0.1)
        at_kill = len(server.messages)
        assert at_kill < RECIPIENTS

        server.SLOW = 0.0  # the rest goes quickly
        resumed = patron(env, "campaigns", "resume", str(campaign.id), "--wait", "--workers", "2")
        assert resumed.returncode == 0, resumed.stderr
        state = json.loads(patron(env, "campaigns", "status", str(campaign.id), "--json").stdout)
        copies = server.copies()
    assert state["state"] == "finished" and state["pending"] == state["sending"] == 0
    assert state["unknown"] <= 2 * SEND_AHEAD  # what each worker had in flight, no more
    assert state["sent"] + state["unknown"] == RECIPIENTS
    assert max(copies.values()) == 1 and state["sent"] <= len(copies)


@pytest.mark.parametrize("prctl", [True, False], ids=["prctl", "watchdog"])
def test_a_process_set_to_die_with_its_parent_does_so_by_either_means(prctl):
    child = (
        "import os, sys, time; from campaigns.executors import die_with_parent;"
        f"die_with_parent(os.getppid(), poll=0.2, prctl={prctl}); print(os.getpid(), flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(parent.stdout.readline())
    assert alive(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its parent"
        time.sleep(0.05)
