"""minidyn/runs/malloc.py: the glibc tuning is applied on Linux/glibc, skipped when opted out or absent."""
import ctypes
import platform
import subprocess
import sys

import pytest

from minidyn.runs import malloc


def test_opting_out_never_touches_libc(monkeypatch):
    monkeypatch.setenv("MINIDYN_MALLOC_TUNING", "0")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: pytest.fail("libc was loaded"))
    assert malloc.tune_glibc_malloc() is False


def test_a_libc_without_mallopt_is_skipped_quietly(monkeypatch):
    """musl and other C libraries have no mallopt: nothing is applied and nothing fails."""
    monkeypatch.delenv("MINIDYN_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(malloc.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())
    assert malloc.tune_glibc_malloc() is False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc only")
def test_it_is_applied_on_linux_with_glibc():
    code = "from minidyn.runs.malloc import tune_glibc_malloc; print(tune_glibc_malloc())"
    env = {"PATH": "/usr/bin:/bin"}  # MINIDYN_MALLOC_TUNING unset
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
