'use strict';
// tests/apps_node.js MODE PORT [CONNS ROUNDS BIG]: the servers and clients
// of t_apps_node and t_apps_node_single.
//   net-server PORT      a single-process net server: frames of a type byte,
//                        a 4-byte big-endian length and a payload; E echoes,
//                        H answers the payload's sha256, B sends N random
//                        bytes then their sha256
//   net-client ...       CONNS connections at once, ROUNDS echo round trips
//                        each (checked), then BIG bytes up and down (hashed)
//   cluster-server PORT  cluster, round robin (SCHED_RR): 2 HTTP workers
//   http-client ...      CONNS kept-alive connections, ROUNDS POST /echo
//                        each (checked), then BIG bytes up and down (hashed)
// Servers print "ready" once listening (all workers); errors exit 1 with
// one line on stderr.
const cluster = require('cluster');
const crypto = require('crypto');
const http = require('http');
const net = require('net');

const [mode, portArg, connsArg, roundsArg, bigArg] = process.argv.slice(2);
const port = +portArg;
const conns = +connsArg, rounds = +roundsArg, big = +bigArg;
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
let step = 'starting'; // what the client is doing, for messages
const die = (msg) => { console.error(`${mode} ${process.pid}: ${msg}`); process.exit(1); };
const eof = () => Object.assign(new Error('the connection ended (EOF) before the answer was complete'), { eof: true });

// Exactly-n-bytes reads over a net.Socket, in order.
class Reader {
	constructor(sock) {
		this.chunks = []; this.len = 0; this.waiters = []; this.done = null;
		sock.on('data', (d) => { this.chunks.push(d); this.len += d.length; this.pump(); });
		sock.on('end', () => { this.done = this.done || eof(); this.pump(); });
		sock.on('error', (e) => { this.done = this.done || e; this.pump(); });
	}
	take(n) {
		const out = Buffer.allocUnsafe(n);
		let off = 0;
		while (off < n) {
			const c = this.chunks[0], k = Math.min(c.length, n - off);
			c.copy(out, off, 0, k);
			off += k;
			if (k === c.length) this.chunks.shift(); else this.chunks[0] = c.subarray(k);
		}
		this.len -= n;
		return out;
	}
	pump() {
		while (this.waiters.length && this.len >= this.waiters[0].n) {
			const w = this.waiters.shift();
			w.resolve(this.take(w.n));
		}
		if (this.done && this.waiters.length) {
			for (const w of this.waiters.splice(0)) w.reject(this.done);
		}
	}
	read(n) {
		return new Promise((resolve, reject) => { this.waiters.push({ n, resolve, reject }); this.pump(); });
	}
}

// A frame: a type byte, a 4-byte big-endian length, the payload.
const frame = (type, payload) => {
	const h = Buffer.alloc(5);
	h.write(type, 0, 'latin1');
	h.writeUInt32BE(payload.length, 1);
	return [h, payload];
};
async function readFrame(rd) {
	const h = await rd.read(5);
	return { type: String.fromCharCode(h[0]), payload: await rd.read(h.readUInt32BE(1)) };
}

// net server: E echoes, H answers the sha256 of the payload, B sends as
// many random bytes as the 4-byte payload says, then H with their hash.
function netServer() {
	const srv = net.createServer(async (sock) => {
		const rd = new Reader(sock);
		try {
			for (;;) {
				const f = await readFrame(rd);
				if (f.type === 'E') {
					sock.write(Buffer.concat(frame('E', f.payload)));
				} else if (f.type === 'H') {
					sock.write(Buffer.concat(frame('H', Buffer.from(sha(f.payload), 'hex'))));
				} else if (f.type === 'B') {
					const b = crypto.randomBytes(f.payload.readUInt32BE(0));
					for (const p of frame('B', b)) sock.write(p);
					sock.write(Buffer.concat(frame('H', Buffer.from(sha(b), 'hex'))));
				} else {
					die(`bad frame type ${f.type}`);
				}
			}
		} catch (e) {
			if (!e.eof) console.error(`net-server: ${e.message}`);
			sock.end();
		}
	});
	srv.listen(port, '127.0.0.1', () => console.log('ready'));
}

async function netClient() {
	const connect = () => new Promise((resolve, reject) => {
		const s = net.connect(port, '127.0.0.1', () => resolve(s));
		s.once('error', reject);
	});
	const t0 = process.hrtime.bigint();
	step = `${conns} connections x ${rounds} echo round trips`;
	await Promise.all([...Array(conns).keys()].map(async (k) => {
		const s = await connect();
		const rd = new Reader(s);
		for (let i = 0; i < rounds; i++) {
			const m = crypto.randomBytes(1 + crypto.randomInt(8192));
			s.write(Buffer.concat(frame('E', m)));
			const f = await readFrame(rd);
			if (f.type !== 'E' || !f.payload.equals(m))
				die(`connection ${k}, round ${i}: the echo differs (${f.payload.length} bytes back, ${m.length} sent)`);
		}
		s.end();
	}));
	const dt = Number(process.hrtime.bigint() - t0) / 1e9;
	console.log(`net: ${conns} connections x ${rounds} round trips: every echo right, ${Math.round(conns * rounds / dt)} round trips/s`);
	step = `a new connection for ${big} bytes up`;
	const s = await connect();
	const rd = new Reader(s);
	const up = crypto.randomBytes(big);
	for (const p of frame('H', up)) s.write(p);
	let f = await readFrame(rd);
	if (f.type !== 'H' || f.payload.toString('hex') !== sha(up)) die(`${big} bytes up: the server's hash differs`);
	step = `${big} bytes down`;
	const n = Buffer.alloc(4);
	n.writeUInt32BE(big);
	s.write(Buffer.concat(frame('B', n)));
	const down = await readFrame(rd);
	f = await readFrame(rd);
	if (down.type !== 'B' || down.payload.length !== big) die(`${big} bytes down: got ${down.payload.length}`);
	if (f.type !== 'H' || f.payload.toString('hex') !== sha(down.payload)) die(`${big} bytes down: the hash differs`);
	s.end();
	console.log(`net: ${big} bytes up and ${big} bytes down: hashes agree`);
}

// HTTP server (in cluster workers): POST /echo, POST /hash, GET /blob?n=N;
// every answer says which worker and which client port served it.
function httpServer() {
	const srv = http.createServer((req, res) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => {
			const body = Buffer.concat(chunks);
			res.setHeader('x-worker', String(process.pid));
			res.setHeader('x-conn', String(req.socket.remotePort));
			const url = new URL(req.url, 'http://x');
			let out;
			if (req.method === 'POST' && url.pathname === '/echo') {
				out = body;
			} else if (req.method === 'POST' && url.pathname === '/hash') {
				out = Buffer.from(sha(body));
			} else if (req.method === 'GET' && url.pathname === '/blob') {
				out = crypto.randomBytes(+url.searchParams.get('n'));
				res.setHeader('x-sha256', sha(out));
			} else {
				res.statusCode = 404;
				out = Buffer.alloc(0);
			}
			res.setHeader('content-length', out.length);
			res.end(out);
		});
	});
	srv.keepAliveTimeout = 30000;
	srv.listen(port, '127.0.0.1');
}

function clusterServer() {
	cluster.schedulingPolicy = cluster.SCHED_RR;
	if (cluster.isPrimary) {
		let listening = 0;
		cluster.on('listening', () => { if (++listening === 2) console.log('ready'); });
		cluster.on('exit', (w, code, sig) => console.log(`worker ${w.process.pid} exited (${code}, ${sig})`));
		for (let i = 0; i < 2; i++) cluster.fork();
	} else {
		httpServer();
	}
}

function request(agent, method, path, body) {
	return new Promise((resolve, reject) => {
		const req = http.request({ host: '127.0.0.1', port, method, path, agent,
			headers: body ? { 'content-length': body.length } : {} }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
			res.on('error', reject);
		});
		req.on('error', reject);
		req.setTimeout(10000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
		req.end(body);
	});
}

async function httpClient() {
	const t0 = process.hrtime.bigint();
	const workers = new Set();
	step = `${conns} kept-alive connections x ${rounds} POST /echo`;
	await Promise.all([...Array(conns).keys()].map(async (k) => {
		const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
		let seen = null;
		for (let i = 0; i < rounds; i++) {
			const m = crypto.randomBytes(1 + crypto.randomInt(8192));
			const r = await request(agent, 'POST', '/echo', m);
			if (r.status !== 200 || !r.body.equals(m))
				die(`connection ${k}, request ${i}: status ${r.status}, ${r.body.length} bytes back, ${m.length} sent or different`);
			const c = `${r.headers['x-worker']}:${r.headers['x-conn']}`;
			if (seen === null) seen = c;
			else if (c !== seen) die(`connection ${k}, request ${i}: served as ${c}, earlier requests as ${seen} (the kept-alive connection was lost)`);
			workers.add(r.headers['x-worker']);
		}
		agent.destroy();
	}));
	const dt = Number(process.hrtime.bigint() - t0) / 1e9;
	console.log(`http: ${conns} kept-alive connections x ${rounds} requests: every echo right, ${workers.size} worker(s), ${Math.round(conns * rounds / dt)} requests/s`);
	if (workers.size < 2) die(`all connections went to ${workers.size} worker(s), expected 2 (round robin)`);
	const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
	step = `a new connection: POST /hash of ${big} bytes`;
	const up = crypto.randomBytes(big);
	let r = await request(agent, 'POST', '/hash', up);
	if (r.status !== 200 || r.body.toString() !== sha(up)) die(`POST /hash of ${big} bytes: status ${r.status}, hash ${r.body.toString().slice(0, 16)}...`);
	step = `GET /blob of ${big} bytes`;
	r = await request(agent, 'GET', `/blob?n=${big}`);
	if (r.status !== 200 || r.body.length !== big || sha(r.body) !== r.headers['x-sha256'])
		die(`GET /blob of ${big} bytes: status ${r.status}, ${r.body.length} bytes, hash differs or missing`);
	agent.destroy();
	console.log(`http: ${big} bytes up and ${big} bytes down: hashes agree`);
}

const modes = { 'net-server': netServer, 'cluster-server': clusterServer, 'net-client': netClient, 'http-client': httpClient };
if (!modes[mode]) die('unknown mode');
Promise.resolve(modes[mode]()).catch((e) => die(`${step}: ${e.message}`));
