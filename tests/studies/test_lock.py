"""Lock files: exactly one claimant wins, a dead or silent holder's lock is taken over, a live one's never."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
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
