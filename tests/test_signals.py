"""GracefulStop with real signals sent by os.kill to this process and to child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mirage_cli.base.signals import GracefulStop


def _wait_for(stop: GracefulStop) -> None:
    for _ in range(200):
        if stop.requested:
            return
        time.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_sets_flag_instead_of_killing(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), sig)
        _wait_for(stop)
        assert stop.requested and stop.signum == sig and stop.signal_name == signal.Signals(sig).name
    assert {s: signal.getsignal(s) for s in before} == before


def test_first_signal_is_remembered_and_repeats_are_harmless():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        _wait_for(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert stop.signal_name == "SIGUSR1" and stop.count == 3


def test_second_sigint_raises_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for(stop)
            os.kill(os.getpid(), signal.SIGINT)  # first SIGINT: still graceful
            time.sleep(0.05)
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)  # the user insists
            time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_previous_handler_is_available_for_chaining():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGUSR1, mine)
    try:
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            _wait_for(stop)
            assert seen == []  # replaced while inside
            stop.previous_handler(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert seen == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is mine
    finally:
        signal.signal(signal.SIGUSR1, old)


_LOOP = r"""
import sys, time
from mirage_cli.base.errors import Interrupted
from mirage_cli.base.signals import GracefulStop
with GracefulStop() as stop:
    step = 0
    print("ready", flush=True)
    while True:
        time.sleep(0.02)  # one "denoising step"
        step += 1
        if stop.requested:
            print(f"saved after step {step} on {stop.signal_name}", flush=True)
            sys.exit(Interrupted.exit_code)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_child_finishes_its_step_and_exits_75(sig):
    proc = subprocess.Popen([sys.executable, "-c", _LOOP], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75
    assert out.startswith("saved after step") and out.strip().endswith(signal.Signals(sig).name)
