"""tests/apps_zmq.py MODE PORT FILE: the server and client of t_apps_zmq.

    server PORT FILE   a ROUTER on tcp://127.0.0.1:PORT and a PULL on
                       PORT + 1; prints "ready"
    client PORT FILE   4 DEALERs and a PUSH drive it; exit 1 on a mismatch

libzmq carries the messages in I/O threads of its own (epoll, and eventfd
mailboxes between them and the caller's thread), framed by ZMTP on each
TCP connection.  Each DEALER's requests (1 B to 1 MiB) come back as their
sha256 followed by the bytes reversed; the PUSH streams 2000 messages of
up to 64 KiB that the server hashes in order and reports when the client
asks ("SUM").
"""
import hashlib
import random
import sys

import zmq


def server(port):
    ctx = zmq.Context()
    rt = ctx.socket(zmq.ROUTER)
    rt.bind("tcp://127.0.0.1:%d" % port)
    pull = ctx.socket(zmq.PULL)
    pull.bind("tcp://127.0.0.1:%d" % (port + 1))
    poller = zmq.Poller()
    poller.register(rt, zmq.POLLIN)
    poller.register(pull, zmq.POLLIN)
    streamed, count = hashlib.sha256(), 0
    print("ready", flush=True)
    while True:
        ready = dict(poller.poll(60000))
        if not ready:
            print("server: idle for 60 s", flush=True)
            return 1
        if pull in ready:
            m = pull.recv()
            streamed.update(m)
            count += 1
        if rt in ready:
            who, m = rt.recv_multipart()
            if m == b"SUM":
                rt.send_multipart([who, b"%d %s" % (count, streamed.hexdigest().encode())])
            elif m == b"BYE":
                rt.send_multipart([who, b"BYE"])
                break
            else:
                rt.send_multipart([who, hashlib.sha256(m).digest() + m[::-1]])
    rt.close(linger=1000)
    pull.close(linger=0)
    ctx.term()
    return 0


def client(port):
    ctx = zmq.Context()
    dealers = []
    for _ in range(4):
        d = ctx.socket(zmq.DEALER)
        d.connect("tcp://127.0.0.1:%d" % port)
        dealers.append(d)
    push = ctx.socket(zmq.PUSH)
    push.connect("tcp://127.0.0.1:%d" % (port + 1))
    rnd = random.Random(7)
    for k in range(2000):
        d = dealers[k % 4]
        m = rnd.randbytes(rnd.choice([1, 10, 100, 1500, 5000, 70000, 1 << 20]))
        d.send(m)
        if d.recv() != hashlib.sha256(m).digest() + m[::-1]:
            print("client: wrong answer to request %d (%d bytes)" % (k, len(m)))
            return 1
    want = hashlib.sha256()
    for k in range(2000):
        m = rnd.randbytes(rnd.randrange(1, 65536))
        want.update(m)
        push.send(m)
    expect = b"2000 " + want.hexdigest().encode()
    got = b""
    for _ in range(600):  # the stream arrives behind the request: ask again
        dealers[0].send(b"SUM")
        got = dealers[0].recv()
        if got == expect:
            break
        if not got.startswith(b"2000 ") and int(got.split()[0]) > 2000:
            break
        zmq.select([], [], [], 0.05)
    if got != expect:
        print("client: the stream arrived as %r, sent %r" % (got, expect))
        return 1
    dealers[0].send(b"BYE")
    dealers[0].recv()
    for s in dealers + [push]:
        s.close(linger=0)
    ctx.term()
    print("client: ok")
    return 0


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    sys.exit(server(port) if mode == "server" else client(port))
