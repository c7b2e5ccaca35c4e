"""Lock files: exactly one claimant wins, a dead or silent holder's lock is taken over, a live one's never."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

from minidyn.studies.lock import claim, holder, is_stale


def test_a_claimed_lock_refuses_a_second_claim_until_released(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    first = claim(path)
    assert first is not None and claim(path) is None
    assert holder(path)["pid"] == os.getpid() and holder(path)["host"] == socket.gethostname()
    first.release()
    assert not path.exists() and claim(path) is not None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_of_a_dead_process_of_this_host_is_taken_over_at_once(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"}))
    assert is_stale(path, stale_after=3600)
    lock = claim(path, stale_after=3600)
    assert lock is not None and holder(path)["token"] == lock.token


def test_a_lock_without_a_heartbeat_for_stale_after_seconds_is_taken_over(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"host": "another-host", "pid": 1, "token": "x"}))
    assert claim(path, stale_after=60) is None          # fresh: another host's live holder
    old = time.time() - 120
    os.utime(path, (old, old))                          # its heartbeat stopped two minutes ago
    lock = claim(path, stale_after=60)
    assert lock is not None and holder(path)["token"] == lock.token


def test_a_heartbeat_keeps_a_lock_fresh_and_a_takeover_is_noticed(tmp_path):
    path = tmp_path / "a.lock"
    lock = claim(path)
    old = time.time() - 120
    os.utime(path, (old, old))
    lost = []
    lock.keep_alive(0.05, lost=lambda: lost.append(True))
    time.sleep(0.3)
    assert not is_stale(path, stale_after=60)
    path.write_text(json.dumps({"host": "h", "pid": 1, "token": "someone else"}))  # taken over
    time.sleep(0.3)
    assert lost == [True]
    lock.release()
    assert path.exists()  # not ours any more: left alone


def _race(path, start, results):
    while time.time() < start:
        pass
    lock = claim(path, stale_after=60)
    results.put(lock is not None)
    time.sleep(0.5)  # hold it while the others try


def test_of_many_processes_claiming_one_stale_lock_at_once_exactly_one_wins(tmp_path):
    for attempt in range(3):
        path = tmp_path / f"race{attempt}.lock"
        path.write_text(json.dumps({"host": "gone", "pid": 1, "token": "old"}))
        old = time.time() - 120
        os.utime(path, (old, old))
        ctx = multiprocessing.get_context("fork")
        results, start = ctx.Queue(), time.time() + 0.3
        procs = [ctx.Process(target=_race, args=(path, start, results)) for _ in range(6)]
        for p in procs:
            p.start()
        wins = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join()
        assert sum(wins) == 1, wins


def _stale_lock(path):
    path.write_text(json.dumps({"host": "gone", "pid": 1, "token": "old"}))
    old = time.time() - 120
    os.utime(path, (old, old))


def _renames_by(monkeypatch, moved: list) -> None:
    """Record in `moved` every os.rename's (thread name, source file name)."""
    real = os.rename

    def spy(src, dst):
        moved.append((threading.current_thread().name, os.path.basename(src)))
        real(src, dst)

    monkeypatch.setattr(os, "rename", spy)


def test_a_takeover_created_while_another_claimer_judges_it_is_not_moved(tmp_path, monkeypatch):
    """Claimer X finds no .takeover and is held there; C creates its .takeover, finds the lock
    stale and is held there; X goes on, then C. Deleting C's .takeover by name let both hold the
    lock; moving it aside and back left its name free meanwhile (on a 16-core machine a third
    claimer took it then, and two won). X judged no file, so it moves none; exactly one wins."""
    from minidyn.studies import lock as lock_module
    path, real_stale, real_identity = tmp_path / "a.lock", lock_module.is_stale, lock_module._identity
    _stale_lock(path)
    x_judged, c_checked, x_done = threading.Event(), threading.Event(), threading.Event()
    path_checks, moved = [], []

    def identity(p):
        result = real_identity(p)
        if threading.current_thread().name == "X" and p.name.endswith(".takeover") and not x_judged.is_set():
            x_judged.set()  # X has found no .takeover
            c_checked.wait(5)
        return result

    def stale(p, *args, **kwargs):
        result = real_stale(p, *args, **kwargs)
        if threading.current_thread().name == "C" and p == path:
            path_checks.append(result)
            if len(path_checks) == 2:  # under its .takeover, the lock found stale
                c_checked.set()
                x_done.wait(5)
        return result

    monkeypatch.setattr(lock_module, "_identity", identity)
    monkeypatch.setattr(lock_module, "is_stale", stale)
    _renames_by(monkeypatch, moved)
    held = {}

    def claimer(name):
        held[name] = claim(path, stale_after=60)
        if name == "X":
            x_done.set()

    x = threading.Thread(target=claimer, args=("X",), name="X")
    x.start()
    assert x_judged.wait(5)
    c = threading.Thread(target=claimer, args=("C",), name="C")
    c.start()
    x.join(20)
    c.join(20)
    assert c_checked.is_set()  # the interleaving happened
    winners = [name for name, lock in held.items() if lock is not None]
    assert winners == ["C"], winners
    assert holder(path)["token"] == held["C"].token
    assert ("X", "a.lock.takeover") not in moved, moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock"]  # nothing left aside


def test_a_stale_lock_replaced_before_it_is_broken_is_left_in_place(tmp_path, monkeypatch):
    """The lock was judged stale; before it is broken, another process claims it afresh: the
    fresh lock is another file, so it is not moved at all (before: moved aside, found not to
    hold the record judged stale, and put back, its name free in between)."""
    from minidyn.studies import lock as lock_module
    path, real = tmp_path / "a.lock", lock_module.is_stale
    _stale_lock(path)
    fresh, moved = {}, []

    def hooked(p, *args, **kwargs):
        result = real(p, *args, **kwargs)
        if p == path and not fresh:  # judged stale; now replaced
            path.unlink()
            fresh["lock"] = claim(path, stale_after=60)
        return result

    monkeypatch.setattr(lock_module, "is_stale", hooked)
    _renames_by(monkeypatch, moved)
    lock_module._break_if_stale(path, stale_after=60)
    assert fresh["lock"] is not None and holder(path)["token"] == fresh["lock"].token
    assert moved == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock"]


def test_a_stale_takeover_is_still_broken(tmp_path):
    """The identity check leaves stale files breakable: a .takeover whose claimer died midway
    is removed, and the lock behind it is claimed."""
    path = tmp_path / "a.lock"
    _stale_lock(path)
    takeover = tmp_path / "a.lock.takeover"
    takeover.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "t"}))
    lock = claim(path, stale_after=60)
    assert lock is not None and holder(path)["token"] == lock.token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock"]


def test_a_transient_read_error_in_the_heartbeat_is_not_a_takeover(tmp_path, monkeypatch):
    """An unreadable lock file (an I/O error, then half a record) once in the heartbeat: the
    holder goes on; only a readable record with another token is a takeover."""
    from minidyn.studies import lock as lock_module
    path = tmp_path / "a.lock"
    lock = claim(path)
    real, faults = lock_module.read_lock, ["error", "partial"]

    def flaky(p):
        if p != path or not faults:
            return real(p)
        if faults.pop(0) == "error":
            raise OSError("stale file handle")
        return None  # half a record: no record yet

    monkeypatch.setattr(lock_module, "read_lock", flaky)
    lost = []
    lock.keep_alive(0.05, lost=lambda: lost.append(True))
    time.sleep(0.4)
    assert lost == [] and not faults
    path.write_text(json.dumps({"host": "h", "pid": 1, "token": "someone else"}))  # taken over
    time.sleep(0.3)
    assert lost == [True]


# --- liveness that cannot be fooled (issue 25) ----------------------------------------------------
def _record(pid, **extra) -> str:
    return json.dumps({"host": socket.gethostname(), "pid": pid, "token": "x", **extra})


def test_a_live_pid_that_is_not_the_holder_is_not_proof_of_life(tmp_path):
    """pid reuse: the lock's pid is alive on this host, but as another process (another start
    time, or no start recorded and not a minidyn process): the lock is stale at once, not after
    stale_after (before: held for as long as that process lived)."""
    from minidyn.studies.lock import holders_here, process_start
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reused = tmp_path / "reused.lock"
        reused.write_text(_record(sleeper.pid, started="another-boot:12345"))
        unmarked = tmp_path / "unmarked.lock"
        unmarked.write_text(_record(sleeper.pid))
        assert is_stale(reused, stale_after=3600) and is_stale(unmarked, stale_after=3600)
        assert holders_here(tmp_path, stale_after=3600) == []
        own = tmp_path / "own.lock"  # the real holder: its pid and its start
        own.write_text(_record(sleeper.pid, started=process_start(sleeper.pid)))
        assert not is_stale(own, stale_after=3600)
        assert [r["pid"] for r in holders_here(tmp_path, stale_after=3600)] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_0_and_negative_pids_are_no_process(tmp_path):
    from minidyn.studies.lock import holders_here, pid_alive
    assert not pid_alive(0) and not pid_alive(-1) and not pid_alive(2 ** 70)
    for pid in (0, -1):
        path = tmp_path / f"pid{pid}.lock"
        path.write_text(_record(pid))
        old = time.time() - 30
        os.utime(path, (old, old))
        assert is_stale(path, stale_after=3600)
    assert holders_here(tmp_path, stale_after=3600) == []


def test_a_heartbeat_in_the_future_is_stale(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"host": "another-host", "pid": 1, "token": "x"}))
    ahead = time.time() + 10 * 3600  # a clock (or a touch) ten hours ahead
    os.utime(path, (ahead, ahead))
    assert is_stale(path, stale_after=600)
    near = time.time() + 60  # a clock a minute ahead: within what stale_after allows
    os.utime(path, (near, near))
    assert not is_stale(path, stale_after=600)
    assert claim(path, stale_after=600) is None


def test_a_lock_with_no_record_is_stale_after_a_short_grace(tmp_path):
    """An empty lock (its claimer died between creating and writing it): stale after
    UNWRITTEN_GRACE seconds, not after stale_after (before: ten minutes of silent waiting)."""
    from minidyn.studies.lock import UNWRITTEN_GRACE
    for name, text in (("empty", ""), ("garbage", "not json"), ("pid-text", '{"host": "h", "pid": "1", "token": "x"}')):
        path = tmp_path / f"{name}.lock"
        path.write_text(text)
        assert not is_stale(path, stale_after=3600)  # being written, for all we know
        old = time.time() - UNWRITTEN_GRACE - 1
        os.utime(path, (old, old))
        assert is_stale(path, stale_after=3600), name
        lock = claim(path, stale_after=3600)
        assert lock is not None and holder(path)["token"] == lock.token


def test_a_fifo_or_a_huge_file_in_locks_is_refused_in_one_line_and_never_blocks(tmp_path):
    """A FIFO where a lock should be blocked every reader (open() waits for a writer); a 100
    MiB lock was read whole. Now each reader opens it non-blocking and checks it first:
    check_locks refuses it naming it, holder and is_stale return at once."""
    import pytest
    from minidyn.errors import ConfigError
    from minidyn.studies.lock import check_locks
    fifo = tmp_path / "fifo" / "a.train.lock"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    done = []
    reader = threading.Thread(target=lambda: done.append((holder(fifo), is_stale(fifo, 60))), daemon=True)
    reader.start()
    reader.join(5)
    assert done == [({}, False)], "a reader blocked on the FIFO"
    with pytest.raises(ConfigError, match=r"a\.train\.lock is not a regular file"):
        check_locks(fifo.parent)
    huge = tmp_path / "huge" / "a.train.lock"
    huge.parent.mkdir()
    with open(huge, "wb") as f:
        f.truncate(100 << 20)
    with pytest.raises(ConfigError, match=r"a\.train\.lock is larger than 4096 bytes"):
        check_locks(huge.parent)


def test_the_jobs_count_leaves_out_silent_holders_and_tasks_not_named(tmp_path):
    from minidyn.studies.lock import holders_here
    mine = claim(tmp_path / "gone-task.train.lock")
    silent = claim(tmp_path / "silent.train.lock")
    old = time.time() - 7200
    os.utime(silent.path, (old, old))  # alive, but no heartbeat for two hours (suspended)
    assert holders_here(tmp_path, stale_after=3600, names={"gone-task.train.lock", "silent.train.lock"}) \
        and len(holders_here(tmp_path, stale_after=3600)) == 1
    assert holders_here(tmp_path, stale_after=3600, names={"another.train.lock"}) == []
    mine.release()
    silent.release()


def test_a_fresh_takeover_is_seen(tmp_path):
    from minidyn.studies.lock import taking_over
    path = tmp_path / "a.lock"
    _stale_lock(path)
    assert not taking_over(path, 60)
    other = claim(path.with_name("a.lock.takeover"), stale_after=60)  # another claimer at work
    assert taking_over(path, 60)
    other.release()
    assert not taking_over(path, 60)


def test_a_runner_mark_appears_whole(tmp_path, monkeypatch):
    """A runner that looks for other runners while one registers must find its record, never
    an empty file it would take for no runner (a second runner with another spec once got
    through that way): while the record is being written, no mark is visible under its name."""
    from minidyn.studies import lock as lock_module

    seen, dump = [], lock_module.json.dump

    def watching_dump(record, f, *args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.glob("runner-*.runner")))
        return dump(record, f, *args, **kwargs)

    monkeypatch.setattr(lock_module.json, "dump", watching_dump)
    mark = lock_module.mark_runner(tmp_path, "abc")
    monkeypatch.undo()
    assert seen == [[]]
    assert lock_module.holder(mark.path)["spec"] == "abc"
    assert [r["spec"] for r in lock_module.live_runners(tmp_path)] == ["abc"]
    mark.release()
