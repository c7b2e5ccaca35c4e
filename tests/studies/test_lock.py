"""Lock files: exactly one claimant wins, a dead or silent holder's lock is taken over, a live one's never."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def test_a_takeover_created_while_another_claimer_judges_it_is_not_deleted(tmp_path, monkeypatch):
    """Claimer X finds no .takeover (stale, as a missing file is) and is held there; C creates
    its .takeover, finds the lock stale and is held there; X goes on, then C. Deleting C's
    .takeover by name let both hold the lock; exactly one may."""
    from minidyn.studies import lock as lock_module
    path, real = tmp_path / "a.lock", lock_module.is_stale
    _stale_lock(path)
    x_judged, c_checked, x_done = threading.Event(), threading.Event(), threading.Event()
    path_checks = []

    def hooked(p, *args, **kwargs):
        result = real(p, *args, **kwargs)
        me = threading.current_thread().name
        if me == "X" and p.name.endswith(".takeover") and not x_judged.is_set():
            x_judged.set()
            c_checked.wait(5)
        if me == "C" and p == path:
            path_checks.append(result)
            if len(path_checks) == 2:  # under its .takeover, the lock found stale
                c_checked.set()
                x_done.wait(5)
        return result

    monkeypatch.setattr(lock_module, "is_stale", hooked)
    held = {}

    def claimer(name):
        held[name] = claim(path, stale_after=60)
        if name == "X":
            x_done.set()

    x = threading.Thread(target=claimer, args=("X",), name="X")
    x.start()
    x_judged.wait(5)
    c = threading.Thread(target=claimer, args=("C",), name="C")
    c.start()
    x.join(20)
    c.join(20)
    winners = [name for name, lock in held.items() if lock is not None]
    assert len(winners) == 1, winners
    assert holder(path)["token"] == held[winners[0]].token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock"]  # nothing left aside


def test_a_stale_lock_replaced_before_it_is_broken_is_put_back(tmp_path, monkeypatch):
    """The lock was judged stale; before it is broken, another process claims it afresh: the
    fresh lock is moved aside, found not to hold the record judged stale, and put back."""
    from minidyn.studies import lock as lock_module
    path, real = tmp_path / "a.lock", lock_module.is_stale
    _stale_lock(path)
    fresh = {}

    def hooked(p, *args, **kwargs):
        result = real(p, *args, **kwargs)
        if p == path and not fresh:  # judged stale; now replaced
            path.unlink()
            fresh["lock"] = claim(path, stale_after=60)
        return result

    monkeypatch.setattr(lock_module, "is_stale", hooked)
    lock_module._break_if_stale(path, stale_after=60)
    assert fresh["lock"] is not None and holder(path)["token"] == fresh["lock"].token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock"]


def test_a_transient_read_error_in_the_heartbeat_is_not_a_takeover(tmp_path, monkeypatch):
    """An unreadable lock file (an I/O error, then half a record) once in the heartbeat: the
    holder goes on; only a readable record with another token is a takeover."""
    path = tmp_path / "a.lock"
    lock = claim(path)
    real, faults = Path.read_text, ["error", "partial"]

    def flaky(self, *args, **kwargs):
        if self != path or not faults:
            return real(self, *args, **kwargs)
        if faults.pop(0) == "error":
            raise OSError("stale file handle")
        return real(self, *args, **kwargs)[:10]

    monkeypatch.setattr(Path, "read_text", flaky)
    lost = []
    lock.keep_alive(0.05, lost=lambda: lost.append(True))
    time.sleep(0.4)
    assert lost == [] and not faults
    path.write_text(json.dumps({"host": "h", "pid": 1, "token": "someone else"}))  # taken over
    time.sleep(0.3)
    assert lost == [True]
