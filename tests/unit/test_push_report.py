"""git_gateway.push_report: the push's command list read from the request, and receive-pack's
side-band answer followed byte by byte (the final flush held back, the refs reported `ok`)."""
from __future__ import annotations

import io

import pytest

from git_gateway import push_report
from git_gateway.push_report import FLUSH, NotAPush, ReportReader, read_commands

A, B, Z = "a" * 40, "b" * 40, "0" * 40


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def test_the_command_list_with_its_capabilities():
    body = (pkt(f"{Z} {A} refs/heads/x\0report-status side-band-64k push-options\n".encode())
            + pkt(f"{A} {B} refs/heads/y\n".encode()) + FLUSH + pkt(b"gpus=a4000:1\n") + FLUSH
            + b"PACK...")
    c = read_commands(io.BytesIO(body).read)
    assert c.updates == ((Z, A, "refs/heads/x"), (A, B, "refs/heads/y"))
    assert c.sideband and c.reported and "push-options" in c.capabilities
    assert c.options == ("gpus=a4000:1",)
    assert body.startswith(c.consumed) and body[len(c.consumed):] == b"PACK..."
    # a reader that hands out one byte at a time reads the same
    src = io.BytesIO(body)
    assert read_commands(lambda n: src.read(1)) == c
    c = read_commands(io.BytesIO(pkt(f"{Z} {A} refs/heads/x\0ofs-delta\n".encode()) + FLUSH).read)
    assert not c.sideband and not c.reported


@pytest.mark.parametrize("body", [
    b"",                                                    # nothing
    b"zzzz",                                                # not a pkt-line
    FLUSH,                                                  # no commands
    pkt(b"shallow " + A.encode() + b"\n") + FLUSH,          # a shallow client's lines first
    pkt(f"{Z} {A} refs/heads/x".encode()),                  # ends inside the list
    pkt(f"{Z} {A} heads/x\0side-band\n".encode()) + FLUSH,  # not a full ref name
    b"0003",                                                # a size below the header's
])
def test_anything_else_is_not_a_push_and_keeps_what_was_read(body):
    with pytest.raises(NotAPush) as e:
        read_commands(io.BytesIO(body).read)
    assert body.startswith(e.value.args[1])


def test_an_oversized_list_is_refused_before_it_is_read_whole(monkeypatch):
    monkeypatch.setattr(push_report, "MAX_COMMANDS_BYTES", 100)
    line = pkt(f"{Z} {A} refs/heads/x\n".encode())
    with pytest.raises(NotAPush):
        read_commands(io.BytesIO(line * 5 + FLUSH).read)


def _answer(report: list[bytes], progress=b"") -> bytes:
    inner = b"".join(pkt(x) for x in report) + FLUSH
    out = pkt(b"\2" + progress) if progress else b""
    return out + pkt(b"\1" + inner) + FLUSH


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_the_answer_passes_through_but_its_final_flush(step):
    answer = _answer([b"unpack ok\n", b"ok refs/heads/x\n", b"option refname refs/heads/x\n",
                      b"ng refs/heads/y pre-receive hook declined\n", b"ok refs/heads/z\n"],
                     progress=b"remote: hello\n")
    r = ReportReader()
    out = b"".join(r.feed(answer[i:i + step]) for i in range(0, len(answer), step))
    assert out == answer[:-4] and r.ended and not r.broken and r.report_done
    assert r.updated == ["refs/heads/x", "refs/heads/z"]
    end = r.ending(["slipway: job 7 queued", "a\nb"])
    assert end == pkt(b"\2slipway: job 7 queued\n") + pkt(b"\2a\n") + pkt(b"\2b\n") + FLUSH


def test_a_stream_it_does_not_understand_goes_through_untouched():
    r = ReportReader()
    assert r.feed(b"zzzz and more") == b"zzzz and more"
    assert r.broken and r.feed(b"rest") == b"rest"
    r = ReportReader()           # bytes after the final flush: everything given back
    answer = _answer([b"unpack ok\n", b"ok refs/heads/x\n"])
    assert r.feed(answer + b"0009extra") == answer + b"0009extra" and r.broken
    r = ReportReader()           # an unpack failure: no ref moved
    r.feed(_answer([b"unpack index-pack abnormal exit\n", b"ng refs/heads/x unpacker error\n"]))
    assert r.ended and r.updated == []


def _body(tmp_path, answer: bytes, after):
    import subprocess
    import sys

    from git_gateway.post_receive import PostReceiveBody
    src = tmp_path / "answer"
    src.write_bytes(answer)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write("
                             f"open({str(src)!r}, 'rb').read())"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    return PostReceiveBody(proc, [], after=after)


def test_the_post_receive_runs_once_before_the_final_flush(tmp_path):
    calls = []
    answer = _answer([b"unpack ok\n", b"ok refs/heads/x\n"])
    body = _body(tmp_path, answer, lambda refs: calls.append(refs) or ["slipway: job 1 queued"])
    out = b"".join(body)
    body.close()
    assert out == answer[:-4] + pkt(b"\2slipway: job 1 queued\n") + FLUSH
    assert calls == [["refs/heads/x"]]


def test_a_client_gone_mid_answer_still_gets_its_jobs(tmp_path):
    """waitress stops iterating and closes the body when the client goes away: receive-pack's
    answer is read to its end and the post-receive runs for the refs it moved."""
    calls = []
    answer = pkt(b"\2" + b"x" * 60_000) * 5 + _answer([b"unpack ok\n", b"ok refs/heads/x\n"])
    body = _body(tmp_path, answer, lambda refs: calls.append(refs) or ["gone"])
    it = iter(body)
    next(it)                         # one chunk sent, then the client is gone
    body.close()
    assert calls == [["refs/heads/x"]]


def test_a_failing_post_receive_is_said_not_raised(tmp_path):
    def boom(refs):
        raise RuntimeError("db down")
    answer = _answer([b"unpack ok\n", b"ok refs/heads/x\n"])
    body = _body(tmp_path, answer, boom)
    out = b"".join(body)
    body.close()
    assert out.endswith(pkt(b"\2slipway: internal error in Slipway\n") + FLUSH)
