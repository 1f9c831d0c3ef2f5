"""tests/apps_python.py MODE PORT FILE: the server and client of t_apps_python.

    server PORT FILE   a threaded server on 127.0.0.1:PORT; prints "ready"
    client PORT FILE   drives it; every answer checked; exit 1 on a mismatch

One connection at a time per thread.  Requests are lines read through
socket.makefile(); answers are written through makefile() as well, except:

    ECHO N\\n + N bytes  the N bytes back
    SUM N\\n + N bytes   their sha256 (hex) and a newline
    FILE\\n              "SIZE SHA256\\n", then FILE by socket.sendfile()
    CAT\\n               "SIZE SHA256\\n", then FILE written straight into the
                        socket by a `cat` child (subprocess, stdout = the
                        socket, close_fds=True)
    SPAWN\\n             runs a child with close_fds=True (vfork and
                        close_range in CPython) while the connection is open,
                        answers the child's output line
    CLOSE\\n             "OK\\n", then reads to EOF (the client closes) and
                        sends into the closed connection: over TCP the first
                        send succeeds and a later one fails with EPIPE or
                        ECONNRESET; prints "after-close: ok ..." or
                        "after-close: FAIL ..." on stdout
    BYE\\n               closes
"""
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time


def sha(data):
    return hashlib.sha256(data).hexdigest()


def log(msg):
    print(msg, flush=True)


def serve_conn(conn, path):
    rf = conn.makefile("rb")
    wf = conn.makefile("wb")
    with open(path, "rb") as f:
        file_data = f.read()
    file_line = b"%d %s\n" % (len(file_data), sha(file_data).encode())
    while True:
        line = rf.readline()
        if not line:
            return
        words = line.split()
        cmd = words[0]
        if cmd == b"ECHO":
            data = rf.read(int(words[1]))
            wf.write(data)
            wf.flush()
        elif cmd == b"SUM":
            n, h = int(words[1]), hashlib.sha256()
            while n > 0:
                chunk = rf.read(min(n, 1 << 16))
                if not chunk:
                    return
                h.update(chunk)
                n -= len(chunk)
            wf.write(h.hexdigest().encode() + b"\n")
            wf.flush()
        elif cmd == b"FILE":
            wf.write(file_line)
            wf.flush()
            with open(path, "rb") as f:
                conn.sendfile(f)
        elif cmd == b"CAT":
            wf.write(file_line)
            wf.flush()
            subprocess.run(["cat", path], stdout=conn.fileno(), close_fds=True, check=True)
        elif cmd == b"SPAWN":
            out = subprocess.run([sys.executable, "-c", "print('child', 6 * 7)"],
                                 stdout=subprocess.PIPE, close_fds=True, check=True).stdout
            wf.write(out)
            wf.flush()
        elif cmd == b"CLOSE":
            wf.write(b"OK\n")
            wf.flush()
            rest = rf.read()  # to EOF: the client has closed
            after_close(conn, len(rest))
            return
        elif cmd == b"BYE":
            return
        else:
            log("server: bad request %r" % line)
            return


def after_close(conn, rest):
    if rest:
        log("after-close: FAIL: %d bytes after CLOSE" % rest)
        return
    try:
        conn.send(b"x")
    except OSError as e:
        log("after-close: FAIL: the first send after the peer's close failed "
            "(%s); over TCP it succeeds" % e)
        return
    deadline = time.monotonic() + 2
    sends = 1
    while time.monotonic() < deadline:
        try:
            conn.send(b"x")
            sends += 1
        except (BrokenPipeError, ConnectionResetError) as e:
            log("after-close: ok: the first send succeeded, send %d failed (%s)"
                % (sends + 1, e.strerror))
            return
        except OSError as e:
            log("after-close: FAIL: send %d failed with %s, expected EPIPE or ECONNRESET"
                % (sends + 1, e))
            return
        time.sleep(0.01)
    log("after-close: FAIL: %d sends into a closed connection all succeeded for 2 s" % sends)


def server(port, path):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    log("ready")

    def run(conn):
        try:
            serve_conn(conn, path)
        except Exception as e:  # noqa: BLE001 - report, keep serving
            log("server: %s: %s" % (type(e).__name__, e))
        finally:
            conn.close()

    while True:
        conn, _ = ls.accept()
        threading.Thread(target=run, args=(conn,), daemon=True).start()


class Fail(Exception):
    pass


STEP = ["connecting"]  # what the client is doing, for messages


def recv_exact(rf, n, what):
    data = rf.read(n)
    if len(data) != n:
        raise Fail("%s: %d bytes of %d, then EOF" % (what, len(data), n))
    return data


def echo_rounds(rf, wf, rounds, what):
    rng = random.Random(rounds)
    for i in range(rounds):
        m = os.urandom(rng.randint(1, 16384))
        wf.write(b"ECHO %d\n" % len(m) + m)
        wf.flush()
        if recv_exact(rf, len(m), "%s, echo %d" % (what, i)) != m:
            raise Fail("%s, echo %d: the %d bytes came back different" % (what, i, len(m)))


def client(port, path):
    with open(path, "rb") as f:
        file_data = f.read()
    file_line = b"%d %s\n" % (len(file_data), sha(file_data).encode())

    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    rf = s.makefile("rb")
    wf = s.makefile("wb")
    STEP[0] = "500 echo round trips"
    t0 = time.monotonic()
    echo_rounds(rf, wf, 500, "main connection")
    dt = time.monotonic() - t0
    log("500 echo round trips (1 B..16 KiB): every echo right, %.0f round trips/s"
        % (500 / dt))

    # 4 MiB up, hashed by the server.
    STEP[0] = "SUM of 4 MiB"
    up = os.urandom(4 << 20)
    wf.write(b"SUM %d\n" % len(up))
    wf.flush()
    s.sendall(up)
    got = rf.readline().strip().decode()
    if got != sha(up):
        raise Fail("SUM of 4 MiB: the server's hash %s differs" % got[:16])
    log("4 MiB up by sendall(): the server's hash agrees")

    # FILE by sendfile(), then the same by a cat child writing the socket.
    for cmd, how in ((b"FILE", "socket.sendfile()"), (b"CAT", "a cat child")):
        STEP[0] = "%s (%d bytes by %s)" % (cmd.decode(), len(file_data), how)
        wf.write(cmd + b"\n")
        wf.flush()
        line = rf.readline()
        if line != file_line:
            raise Fail("%s: header %r, expected %r" % (cmd.decode(), line, file_line))
        if recv_exact(rf, len(file_data), cmd.decode()) != file_data:
            raise Fail("%s: %d bytes by %s differ from the file" % (cmd.decode(), len(file_data), how))
        log("%d bytes down by %s: intact" % (len(file_data), how))

    # Children with close_fds=True on both ends while the connection is open.
    STEP[0] = "SPAWN and 50 round trips"
    wf.write(b"SPAWN\n")
    wf.flush()
    line = rf.readline()
    if line != b"child 42\n":
        raise Fail("SPAWN: the server answered %r, expected b'child 42\\n'" % line)
    out = subprocess.run([sys.executable, "-c", "print('child', 6 * 7)"],
                         stdout=subprocess.PIPE, close_fds=True, check=True).stdout
    if out != b"child 42\n":
        raise Fail("the client's own child printed %r" % out)
    echo_rounds(rf, wf, 50, "main connection after both ends ran a child")
    log("a close_fds=True child on each end; 50 more round trips: right")
    wf.write(b"BYE\n")
    wf.flush()
    if rf.read() != b"":
        raise Fail("BYE: data instead of EOF")
    s.close()

    # A second connection, moved by its traffic, then closed by this end
    # while the server will still send (see after_close).
    STEP[0] = "second connection"
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    rf = s.makefile("rb")
    wf = s.makefile("wb")
    echo_rounds(rf, wf, 40, "second connection")
    wf.write(b"CLOSE\n")
    wf.flush()
    if rf.readline() != b"OK\n":
        raise Fail("CLOSE: no OK")
    rf.close()
    wf.close()
    s.close()
    log("second connection: 40 round trips, then closed by the client")


def main():
    mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "server":
        server(port, path)
    try:
        client(port, path)
    except (Fail, OSError) as e:
        print("client: %s: %s" % (STEP[0], e), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
