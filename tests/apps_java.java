// apps_java.java - the JVM's sockets under shunt (tests/t_apps_java.sh).
// Run as a single source file: java tests/apps_java.java MODE PORT [...]
//   nio-server PORT      one selector thread, non-blocking channels: it
//                        reads only into an empty buffer and, while a write
//                        stays partial, waits for OP_WRITE alone (the NIO
//                        echo that stalled under shunt)
//   thread-server PORT   java.net.ServerSocket, a thread per connection
//   client PORT N BYTES  N connections in turn; on each a writer thread
//                        sends BYTES of a pattern and shuts down, while the
//                        main thread reads the echo and checks every byte
// The servers print "ready" once they listen; the client prints a line per
// run and exits non-zero on any wrong, missing or extra byte.
import java.io.*;
import java.net.*;
import java.nio.*;
import java.nio.channels.*;
import java.util.*;
import java.util.concurrent.*;

public class apps_java {
    static byte pattern(long i) { return (byte) ((i * 2654435761L) >>> 13); }

    static void threadServer(int port) throws Exception {
        ServerSocket ss = new ServerSocket();
        ss.bind(new InetSocketAddress("127.0.0.1", port));
        System.out.println("ready");
        ExecutorService pool = Executors.newCachedThreadPool();
        for (;;) {
            Socket s = ss.accept();
            pool.submit(() -> {
                try (s) {
                    InputStream in = s.getInputStream();
                    OutputStream out = s.getOutputStream();
                    byte[] b = new byte[65536];
                    int n;
                    while ((n = in.read(b)) > 0)
                        out.write(b, 0, n);
                } catch (IOException e) {
                    System.err.println("thread-server: " + e);
                }
                return null;
            });
        }
    }

    static void nioServer(int port) throws Exception {
        Selector sel = Selector.open();
        ServerSocketChannel ss = ServerSocketChannel.open();
        ss.bind(new InetSocketAddress("127.0.0.1", port));
        ss.configureBlocking(false);
        ss.register(sel, SelectionKey.OP_ACCEPT);
        System.out.println("ready");
        for (;;) {
            sel.select();
            Iterator<SelectionKey> it = sel.selectedKeys().iterator();
            while (it.hasNext()) {
                SelectionKey k = it.next();
                it.remove();
                if (!k.isValid())
                    continue;
                if (k.isAcceptable()) {
                    SocketChannel c = ss.accept();
                    if (c != null) {
                        c.configureBlocking(false);
                        c.register(sel, SelectionKey.OP_READ, ByteBuffer.allocateDirect(1 << 16));
                    }
                    continue;
                }
                SocketChannel c = (SocketChannel) k.channel();
                ByteBuffer b = (ByteBuffer) k.attachment();
                try {
                    if (k.isReadable() && b.position() == 0 && c.read(b) < 0) {
                        c.close();
                        continue;
                    }
                    if (b.position() > 0) {
                        b.flip();
                        c.write(b);
                        b.compact();
                        k.interestOps(b.position() > 0 ? SelectionKey.OP_WRITE : SelectionKey.OP_READ);
                    }
                } catch (IOException e) {
                    System.err.println("nio-server: " + e);
                    c.close();
                }
            }
        }
    }

    static void client(int port, int conns, long total) throws Exception {
        long t0 = System.nanoTime();
        for (int i = 0; i < conns; i++) {
            Socket s = new Socket("127.0.0.1", port);
            s.setSoTimeout(20000);
            OutputStream out = s.getOutputStream();
            InputStream in = s.getInputStream();
            final int conn = i;
            final IOException[] failed = new IOException[1];
            Thread w = new Thread(() -> {
                try {
                    byte[] b = new byte[50000];
                    for (long off = 0; off < total;) {
                        int m = (int) Math.min(b.length, total - off);
                        for (int j = 0; j < m; j++)
                            b[j] = pattern(off + j);
                        out.write(b, 0, m);
                        off += m;
                    }
                    s.shutdownOutput();
                } catch (IOException e) {
                    failed[0] = e;
                }
            });
            w.start();
            byte[] b = new byte[70000];
            long got = 0;
            int n;
            while ((n = in.read(b)) > 0) {
                for (int j = 0; j < n; j++)
                    if (b[j] != pattern(got + j))
                        throw new RuntimeException("connection " + conn + ": byte " + (got + j) + " is wrong");
                got += n;
            }
            w.join();
            s.close();
            if (failed[0] != null)
                throw new RuntimeException("connection " + conn + ": writer: " + failed[0]);
            if (got != total)
                throw new RuntimeException("connection " + conn + ": " + got + " of " + total + " bytes came back");
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        System.out.printf("%d connections of %d bytes echoed and checked, %.0f MB/s%n",
                          conns, total, conns * total / secs / 1e6);
    }

    public static void main(String[] a) throws Exception {
        int port = Integer.parseInt(a[1]);
        switch (a[0]) {
        case "nio-server": nioServer(port); break;
        case "thread-server": threadServer(port); break;
        case "client": client(port, Integer.parseInt(a[2]), Long.parseLong(a[3])); break;
        default: throw new IllegalArgumentException("unknown mode " + a[0]);
        }
    }
}
