"""Publishing a set of outputs: all or nothing, a run killed at every rename recovered to one whole set, refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import ccedit.io.publish as publish
from ccedit.errors import UserError
from ccedit.io.atomic import TEMP_MARK, atomic_path, clean_stale_temporaries
from ccedit.io.publish import STAGE_MARK, check_destination, publish_set, recover

NAMES = ["o.mp4", "o.gif", "o_frames", "o.mp4.json"]  # the sidecar last, as an edit publishes them


def _write_set(stage_or_folder, tag: str, names=NAMES) -> None:
    for name in names:
        path = stage_or_folder(name)
        if name.endswith("_frames"):
            path.mkdir()
            (path / "00000.png").write_text(tag)
        else:
            path.write_text(tag)


def _tags(folder: Path, names=NAMES) -> dict[str, str | None]:
    """Which run wrote each output (None: absent)."""
    out = {}
    for name in names:
        path = folder / name
        out[name] = (path / "00000.png").read_text() if path.is_dir() else path.read_text() if path.exists() else None
    return out


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_set_appears_whole_and_replaces_the_old_one_whole(tmp_path):
    _write_set(lambda n: tmp_path / n, "old")
    (tmp_path / "o.side_by_side.mp4").write_text("old")  # part of the old set, not written by the new run
    targets = [tmp_path / n for n in NAMES]
    with publish_set(targets, overwrite=True, replaces=[tmp_path / "o.side_by_side.mp4"]) as stage:
        _write_set(stage.path, "new")
        assert _tags(tmp_path) == dict.fromkeys(NAMES, "old")  # nothing published before the block ends
    assert _tags(tmp_path) == dict.fromkeys(NAMES, "new")
    assert not (tmp_path / "o.side_by_side.mp4").exists()
    assert _hidden(tmp_path) == []


def test_an_error_while_staging_publishes_nothing(tmp_path):
    _write_set(lambda n: tmp_path / n, "old")
    with pytest.raises(RuntimeError, match="encoder"):
        with publish_set([tmp_path / n for n in NAMES], overwrite=True) as stage:
            _write_set(stage.path, "new", NAMES[:2])
            raise RuntimeError("encoder failed")
    assert _tags(tmp_path) == dict.fromkeys(NAMES, "old")
    assert _hidden(tmp_path) == []


def test_without_overwrite_an_output_that_appeared_meanwhile_refuses_the_set(tmp_path):
    targets = [tmp_path / n for n in NAMES]
    with pytest.raises(UserError, match="another run.*--overwrite"):
        with publish_set(targets, overwrite=False) as stage:
            _write_set(stage.path, "mine")
            (tmp_path / "o.gif").write_text("theirs")  # another run published while this one worked
    assert _tags(tmp_path) == {**dict.fromkeys(NAMES), "o.gif": "theirs"}
    assert _hidden(tmp_path) == []
    # an unrelated file of the set's names is not removed without --overwrite
    with publish_set([tmp_path / "o.mp4"], overwrite=False, replaces=[tmp_path / "o.gif"]) as stage:
        stage.path(tmp_path / "o.mp4").write_text("mine")
    assert _tags(tmp_path)["o.gif"] == "theirs"


def test_may_replace_refuses_before_anything_moves(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "thesis.tex").write_text("keep")
    with pytest.raises(UserError, match="not a model folder"):
        with publish_set([tmp_path / "model"], overwrite=True, may_replace=lambda p: f"{p} is not a model folder") as stage:
            stage.path(tmp_path / "model").mkdir()
    assert (tmp_path / "model" / "thesis.tex").read_text() == "keep"
    assert _hidden(tmp_path) == []


def _publish_killed_at_rename(folder: Path, kill_at: int) -> None:
    """In a child process, publish the new set and die (SIGKILL-like, no cleanup) just before rename `kill_at`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            renames = 0
            real_rename = os.rename

            def rename_then_die(src, dst):
                nonlocal renames
                if renames == kill_at:
                    os._exit(9)
                renames += 1
                real_rename(src, dst)

            publish.os.rename = rename_then_die  # `publish.os` is this child's own copy of the os module
            with publish_set([folder / n for n in NAMES], overwrite=True) as stage:
                _write_set(stage.path, "new")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) in (0, 9)


@pytest.mark.parametrize("kill_at", range(2 * len(NAMES) + 1))
def test_a_run_killed_at_any_rename_leaves_the_old_set_or_the_new_set_after_recovery(tmp_path, kill_at):
    _write_set(lambda n: tmp_path / n, "old")
    _publish_killed_at_rename(tmp_path, kill_at)
    tags = _tags(tmp_path)
    # Invariant even before recovery: a sidecar present means every output next to it is from its run.
    if tags["o.mp4.json"] is not None:
        assert set(tags.values()) == {tags["o.mp4.json"]}
    assert any(STAGE_MARK in n for n in _hidden(tmp_path)) == (kill_at < 2 * len(NAMES))
    recover(tmp_path)
    # The 4 old outputs move out first; once they all have, the journal is committed and the new set moves in.
    expected = "old" if kill_at < len(NAMES) else "new"
    assert _tags(tmp_path) == dict.fromkeys(NAMES, expected)
    assert _hidden(tmp_path) == []


def test_recovery_leaves_a_live_run_alone(tmp_path):
    with publish_set([tmp_path / "o.mp4"], overwrite=False) as stage:
        stage.path(tmp_path / "o.mp4").write_text("new")
        assert recover(tmp_path) == []  # this process holds the stage's lock
        assert len(_hidden(tmp_path)) == 1
    assert (tmp_path / "o.mp4").read_text() == "new"


def test_only_dead_and_old_temporaries_are_cleaned(tmp_path):
    dead = tmp_path / f".o{TEMP_MARK}abc.mp4"
    dead.write_text("left by a killed run")
    young = tmp_path / f".p{TEMP_MARK}abc.mp4"
    young.write_text("just created")
    foreign = tmp_path / ".o.tmp-abc.mp4"  # not ccedit's pattern
    foreign.write_text("someone else's")
    past = time.time() - 3600
    for p in (dead, foreign):
        os.utime(p, (past, past))
    with atomic_path(tmp_path / "live.mp4") as live:
        os.utime(live, (past, past))
        assert clean_stale_temporaries(tmp_path) == [dead]  # `live` is locked by this run
        assert live.exists()
    assert young.exists() and foreign.exists()


def test_published_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with publish_set([tmp_path / "o.mp4", tmp_path / "o_frames"], overwrite=False) as stage:
            with atomic_path(stage.path(tmp_path / "o.mp4")) as tmp:
                tmp.write_text("x")
            with atomic_path(stage.path(tmp_path / "o_frames"), is_dir=True) as tmp:
                (tmp / "00000.png").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "o.mp4").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "o_frames").stat().st_mode & 0o777 == 0o750


def test_destination_checks(tmp_path):
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_destination([tmp_path / "taken.mp4"], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_destination([tmp_path / "file" / "sub" / "o.mp4"], overwrite=False)
    with pytest.raises(UserError, match="is a file, but this output is a folder"):
        check_destination([tmp_path / "file"], overwrite=True, folders=[tmp_path / "file"])
    (tmp_path / "o.mp4").write_text("x")
    with pytest.raises(UserError, match="already exists: pass --overwrite"):
        check_destination([tmp_path / "o.mp4"], overwrite=False)
    with pytest.raises(UserError, match="free some space"):
        check_destination([tmp_path / "new" / "o.mp4"], overwrite=False, estimate_bytes=1 << 60)
    check_destination([tmp_path / "new" / "o.mp4"], overwrite=False, estimate_bytes=1024)
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert _hidden(tmp_path) == []


def _plant_stage(folder: Path, journal: dict, marker: dict | None, name: str = ".o.mp4" + STAGE_MARK + "planted") -> Path:
    """A staging folder ccedit did not make: `new/` holds the planter's files under every name the journal lists."""
    root = folder / name
    (root / "new").mkdir(parents=True)
    (root / "old").mkdir()
    for entry in journal["new"]:
        (root / "new" / entry).write_text("planted")
    (root / "journal.json").write_text(json.dumps(journal))
    if marker is not None:
        (root / publish.STAGE_MARKER).write_text(json.dumps(marker))
    return root


def _users_files(folder: Path) -> None:
    (folder / "thesis").mkdir()
    (folder / "thesis" / "chapter1.tex").write_text("mine")
    (folder / "o.mp4").write_text("mine")


def _assert_users_files_kept(folder: Path) -> None:
    assert (folder / "thesis" / "chapter1.tex").read_text() == "mine"
    assert (folder / "o.mp4").read_text() == "mine"


@pytest.mark.parametrize("marker", [None, {"names": ["o.mp4", "o.mp4.json"]}, {"names": ["thesis", "o.mp4"]}],
                         ids=["no marker", "journal names outside the set", "marker of another set"])
def test_a_planted_journal_deletes_nothing_outside_its_staging_folder(tmp_path, caplog, marker):
    _users_files(tmp_path)
    planted = _plant_stage(tmp_path, {"state": "committed", "new": ["thesis", "o.mp4"], "old": []}, marker)
    for path in planted.rglob("*"):
        path.chmod(0o600 if path.is_file() else 0o700)
    planted.chmod(0o700)
    # The next edit into the folder checks the destination and publishes: both recover first.
    check_destination([tmp_path / "other.mp4"], overwrite=False)
    with publish_set([tmp_path / "other.mp4"], overwrite=False) as stage:
        stage.path(tmp_path / "other.mp4").write_text("new")
    _assert_users_files_kept(tmp_path)
    assert (planted / "new" / "thesis").read_text() == "planted"  # left alone as well
    assert "leaving" in caplog.text and planted.name in caplog.text


def test_a_journal_naming_existing_files_never_replaces_them(tmp_path, caplog):
    """Even a staging folder of this user's (a marker, private modes) never deletes what exists in the folder."""
    _users_files(tmp_path)
    os.remove(tmp_path / "o.mp4")
    root = tmp_path / f".thesis{STAGE_MARK}x"
    root.mkdir(mode=0o700)
    (root / "new").mkdir()
    (root / "new" / "thesis").write_text("planted")
    publish._write_private_json(root / publish.STAGE_MARKER, {"names": ["thesis"]})
    publish._write_private_json(root / publish.JOURNAL, {"state": "committed", "new": ["thesis"], "old": []})
    assert recover(tmp_path) == []
    assert (tmp_path / "thesis" / "chapter1.tex").read_text() == "mine"
    assert (root / "new" / "thesis").read_text() == "planted"
    assert "both are kept" in caplog.text


def test_a_writable_by_others_staging_folder_is_not_trusted(tmp_path, caplog):
    _users_files(tmp_path)
    root = _plant_stage(tmp_path, {"state": "committed", "new": ["o.mp4"], "old": []}, {"names": ["o.mp4"]})
    root.chmod(0o777)
    recover(tmp_path)
    _assert_users_files_kept(tmp_path)
    assert root.is_dir() and "writable by other users" in caplog.text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user (os.chown) needs root")
def test_another_users_staging_folder_and_temporaries_are_left_alone(tmp_path, caplog):
    """In a shared folder, another user's plant (marker and journal as ccedit writes them) moves and deletes nothing."""
    other_uid = 4242
    tmp_path.chmod(0o1777)  # a shared sticky folder, like /tmp
    _users_files(tmp_path)
    root = _plant_stage(tmp_path, {"state": "committed", "new": ["thesis", "o.mp4"], "old": []},
                        {"names": ["o.mp4", "thesis"]})
    temporary = tmp_path / f".thesis{TEMP_MARK}abc"
    (temporary / "data").mkdir(parents=True)
    past = time.time() - 3600
    for path in [root, *root.rglob("*"), temporary, *temporary.rglob("*")]:
        os.chown(path, other_uid, other_uid)
        path.chmod(0o600 if path.is_file() else 0o700)
    os.utime(temporary, (past, past))
    check_destination([tmp_path / "other.mp4"], overwrite=False)
    _assert_users_files_kept(tmp_path)
    assert (root / "new" / "thesis").read_text() == "planted"
    assert (temporary / "data").is_dir()
    assert f"uid {other_uid}" in caplog.text


@pytest.mark.parametrize("error", [
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
    ValueError("ffmpeg exited with status 1: av_interleaved_write_frame(): No space left on device"),
])
def test_a_library_reporting_a_full_disk_in_its_own_words_is_one_line(tmp_path, error):
    """The disk may have room again when the error is handled: the library's words, not the free space, decide."""
    with pytest.raises(UserError, match="the disk is full; nothing was replaced"):
        with publish_set([tmp_path / "o.mp4"], overwrite=False) as stage:
            stage.path(tmp_path / "o.mp4").write_text("partial")
            raise error
    assert not (tmp_path / "o.mp4").exists() and _hidden(tmp_path) == []
