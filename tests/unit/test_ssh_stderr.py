"""A command's stderr survives paramiko's read race: a timed-out read as the last bytes and the close arrive."""

from __future__ import annotations

import threading

import paramiko

from provisioner.transport.ssh import _drain_stderr


def closed_channel_with_stderr(text: bytes) -> paramiko.Channel:
    """A real paramiko channel in the state the server leaves it: stderr buffered, then EOF and close."""
    channel = paramiko.Channel(0)
    channel.in_stderr_buffer.feed(text)
    with channel.lock:
        channel._set_closed()
    return channel


def test_a_read_that_times_out_as_the_channel_closes_keeps_the_buffered_stderr() -> None:
    # paramiko's BufferedPipe checks its clock before its buffer: a reader woken late raises PipeTimeout,
    # which Channel.recv_stderr turns into socket.timeout (TimeoutError), though the bytes are there.
    # The first read here does exactly that.
    channel = closed_channel_with_stderr(b"bash: line 1: /srv/venv/bin/python: No such file or directory\n")
    real_read = channel.recv_stderr
    calls = 0

    def late_read(nbytes: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError()
        return real_read(nbytes)

    channel.recv_stderr = late_read  # type: ignore[method-assign]
    errors: list[bytes] = []
    reader = threading.Thread(target=_drain_stderr, args=(channel, errors), daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert b"".join(errors) == b"bash: line 1: /srv/venv/bin/python: No such file or directory\n"
    assert calls == 3  # the timeout, the bytes, then EOF


def test_a_closed_empty_channel_ends_the_reader_at_once() -> None:
    channel = closed_channel_with_stderr(b"")
    errors: list[bytes] = []
    reader = threading.Thread(target=_drain_stderr, args=(channel, errors), daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive() and errors == []
