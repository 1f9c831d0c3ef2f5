# tests/apps_ruby.rb MODE PORT FILE: the server and client of t_apps_ruby.
#
#   server PORT FILE   a server on 127.0.0.1:PORT, a Ruby thread per
#                      connection; prints "ready"
#   client PORT FILE   drives it over 4 connections at once; every answer
#                      checked; exits 1 on a mismatch
#
# Ruby's sockets are non-blocking underneath (Ruby 3): a read or write that
# would block waits in ppoll() while other Ruby threads run, under the
# interpreter's lock, and its timer thread interrupts them.  Requests are
# lines (IO#gets); answers:
#
#   ECHO N\n + N bytes   the N bytes back
#   SUM N\n + N bytes    their SHA-256 (hex) and a newline
#   FILE\n               "SIZE SHA256\n", then FILE by IO.copy_stream (the
#                        kernel's sendfile)
#   BYE\n                closes
#
# One client thread drives two connections through IO.select at once.
# digest/sha2 loaded now: Digest::SHA256's lazy load is not thread-safe in
# Ruby 3.1 (two threads at once: "Digest::Base cannot be directly
# inherited", which killed a server thread in a CI run, over TCP as well).
require "digest/sha2"
require "socket"

def serve(conn, data)
  file_line = "#{data.bytesize} #{Digest::SHA256.hexdigest(data)}\n"
  while (line = conn.gets)
    cmd, n = line.split
    case cmd
    when "ECHO" then conn.write(conn.read(n.to_i))
    when "SUM" then conn.write(Digest::SHA256.hexdigest(conn.read(n.to_i)) + "\n")
    when "FILE"
      conn.write(file_line)
      File.open(ARGV[2], "rb") { |f| IO.copy_stream(f, conn) }
    when "BYE" then break
    else raise "bad request #{line.inspect}"
    end
  end
ensure
  conn.close
end

def server(port, data)
  srv = TCPServer.new("127.0.0.1", port)
  puts "ready"
  $stdout.flush
  loop do
    conn = srv.accept
    Thread.new(conn) do |c|
      serve(c, data)
    rescue StandardError => e
      warn "server: #{e.class}: #{e.message}"
    end
  end
end

def check(cond, what)
  raise "mismatch: #{what}" unless cond
end

# 300 round trips of random sizes, 8 MiB up (hashed), the file down.
def drive(port, data, rng)
  s = TCPSocket.new("127.0.0.1", port)
  300.times do |i|
    msg = rng.bytes(1 + rng.rand(i < 40 ? 64 : 65_536))
    s.write("ECHO #{msg.bytesize}\n", msg)
    check(s.read(msg.bytesize) == msg, "echo #{i}")
  end
  up = rng.bytes(8 << 20)
  s.write("SUM #{up.bytesize}\n")
  (0...up.bytesize).step(100_000) { |o| s.write(up.byteslice(o, 100_000)) }
  check(s.gets == Digest::SHA256.hexdigest(up) + "\n", "sum of 8 MiB")
  s.write("FILE\n")
  size, sum = s.gets.split
  got = +""
  got << s.readpartial(65_536) while got.bytesize < size.to_i
  check(got.bytesize == data.bytesize && Digest::SHA256.hexdigest(got) == sum, "file")
  s.write("BYE\n")
  check(s.read == "", "end of stream after BYE")
  s.close
end

# Two connections, one thread: each request goes out, then IO.select says
# which answer is ready to read.
def drive_select(port, rng)
  socks = Array.new(2) { TCPSocket.new("127.0.0.1", port) }
  want = {}
  200.times do |i|
    socks.each do |s|
      msg = rng.bytes(1 + rng.rand(i < 40 ? 64 : 32_768))
      want[s] = [msg, +""]
      s.write("ECHO #{msg.bytesize}\n", msg)
    end
    until want.empty?
      ready, = IO.select(want.keys, nil, nil, 20)
      check(ready, "select timed out at round #{i}")
      ready.each do |s|
        msg, got = want[s]
        got << s.read_nonblock(msg.bytesize - got.bytesize, exception: false).to_s
        next if got.bytesize < msg.bytesize
        check(got == msg, "select echo #{i}")
        want.delete(s)
      end
    end
  end
  socks.each { |s| s.write("BYE\n"); check(s.read == "", "end after BYE"); s.close }
end

def client(port, data)
  threads = (0...3).map { |k| Thread.new { drive(port, data, Random.new(k + 1)) } }
  threads << Thread.new { drive_select(port, Random.new(7)) }
  threads.each(&:join)
  puts "client: ok"
rescue StandardError => e
  puts "client: FAIL #{e.class}: #{e.message}"
  exit 1
end

Thread.abort_on_exception = false
mode, port, path = ARGV
data = File.binread(path)
case mode
when "server" then server(port.to_i, data)
when "client" then client(port.to_i, data)
else abort "usage: apps_ruby.rb server|client PORT FILE"
end
