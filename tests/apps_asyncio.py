"""tests/apps_asyncio.py MODE PORT FILE: the server and client of t_apps_asyncio.

    server PORT FILE   an asyncio server on 127.0.0.1:PORT; prints "ready"
    client PORT FILE   8 connections at once from one event loop; every
                       answer checked; prints "client: ok", exits 1 on a
                       mismatch

asyncio runs everything on one thread over epoll (selectors): a socket
that would block is registered for readiness, and writers pause and
resume with the transport's buffer (drain).  Requests are lines:

    ECHO N\\n + N bytes   the N bytes back
    SUM N\\n + N bytes    their SHA-256 (hex) and a newline
    PIPE N\\n + N bytes   the N bytes back as they come, 64 KiB at a time,
                         each drained before the next is read
    FILE\\n               "SIZE SHA256\\n", then FILE by loop.sendfile()
                         (os.sendfile underneath)
    BYE\\n                closes
"""
import asyncio
import hashlib
import random
import sys


async def serve(reader, writer, data):
    file_line = b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd, _, n = line.decode().partition(" ")
            if cmd == "ECHO":
                writer.write(await reader.readexactly(int(n)))
                await writer.drain()
            elif cmd == "PIPE":
                left = int(n)
                while left:
                    piece = await reader.read(min(left, 65536))
                    if not piece:
                        raise RuntimeError("PIPE cut short")
                    left -= len(piece)
                    writer.write(piece)
                    await writer.drain()
            elif cmd == "SUM":
                body = await reader.readexactly(int(n))
                writer.write(hashlib.sha256(body).hexdigest().encode() + b"\n")
                await writer.drain()
            elif cmd == "FILE\n":
                writer.write(file_line)
                await writer.drain()
                with open(sys.argv[3], "rb") as f:
                    await loop.sendfile(writer.transport, f)
            elif cmd == "BYE\n":
                break
            else:
                raise RuntimeError("bad request %r" % line)
    finally:
        writer.close()


async def server(port, data):
    srv = await asyncio.start_server(lambda r, w: serve(r, w, data), "127.0.0.1", port)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


def check(cond, what):
    if not cond:
        raise RuntimeError("mismatch: " + what)


async def drive(port, data, k):
    rng = random.Random(k)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(300):
        msg = rng.randbytes(1 + rng.randrange(64 if i < 40 else 65536))
        writer.write(b"ECHO %d\n" % len(msg) + msg)
        await writer.drain()
        check(await reader.readexactly(len(msg)) == msg, "echo %d on %d" % (i, k))
    up = rng.randbytes(4 << 20)
    writer.write(b"SUM %d\n" % len(up))
    for o in range(0, len(up), 100000):
        writer.write(up[o:o + 100000])
        await writer.drain()
    check(await reader.readline() == hashlib.sha256(up).hexdigest().encode() + b"\n",
          "sum of 4 MiB on %d" % k)
    # Written whole before a byte of the echo is read: the transport stops
    # reading while it waits to drain, and so does the server's.  TCP's
    # buffers hold the 3 MiB; the rings hold 512 KiB each way, and both
    # ends then waited for room for good (io.c, "Both ends full").
    big = rng.randbytes(3 << 20)
    writer.write(b"PIPE %d\n" % len(big) + big)
    await writer.drain()
    check(await reader.readexactly(len(big)) == big, "3 MiB piped back on %d" % k)
    writer.write(b"FILE\n")
    size, _, sha = (await reader.readline()).decode().strip().partition(" ")
    got = await reader.readexactly(int(size))
    check(len(got) == len(data) and hashlib.sha256(got).hexdigest() == sha, "file on %d" % k)
    writer.write(b"BYE\n")
    await writer.drain()
    check(await reader.read() == b"", "end of stream after BYE on %d" % k)
    writer.close()
    await writer.wait_closed()


async def client(port, data):
    await asyncio.gather(*(drive(port, data, k) for k in range(8)))


def main():
    mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "rb") as f:
        data = f.read()
    if mode == "server":
        asyncio.run(server(port, data))
    elif mode == "client":
        try:
            asyncio.run(client(port, data))
        except Exception as e:  # noqa: BLE001 - the test reads this line
            print("client: FAIL %s: %s" % (type(e).__name__, e), flush=True)
            sys.exit(1)
        print("client: ok", flush=True)
    else:
        sys.exit("usage: apps_asyncio.py server|client PORT FILE")


if __name__ == "__main__":
    main()
