"""Counting what a client sends: a TCP proxy that records the PostgreSQL
protocol in both directions, and a reader for `log_statement = 'all'`.

Round trips. The proxy forwards bytes unchanged and notes every chunk it
reads, in order, from one select() loop per connection. A client "turn" is
a run of client chunks with no server bytes in between; it is a round trip
when the server answers it. Turns before the server's first ReadyForQuery
are the connection (startup, SCRAM authentication); the rest are the work.
A client that pipelines many queries in one write (db-setup's batch) makes
one turn of them. The closing Terminate gets no answer and is not counted.
"""

import re
import select
import socket
import struct
import threading
import time

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class _Parser:
    """Splits a byte stream into PostgreSQL messages (type byte + length)."""

    def __init__(self, untyped_first):
        self.buf = b""
        self.untyped = untyped_first  # the client's startup packets have no type byte
        self.single_byte_reply = False  # the server's answer to SSLRequest

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if self.single_byte_reply:
                if not self.buf:
                    break
                out.append(("ssl-reply", self.buf[:1].decode("latin-1")))
                self.buf = self.buf[1:]
                self.single_byte_reply = False
                continue
            if self.untyped:
                if len(self.buf) < 8:
                    break
                (length,) = struct.unpack("!I", self.buf[:4])
                if len(self.buf) < length:
                    break
                (code,) = struct.unpack("!I", self.buf[4:8])
                self.buf = self.buf[length:]
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    out.append(("ssl-request", ""))  # another untyped packet follows
                else:
                    out.append(("startup", ""))
                    self.untyped = False
                continue
            if len(self.buf) < 5:
                break
            (length,) = struct.unpack("!I", self.buf[1:5])
            if len(self.buf) < 1 + length:
                break
            kind = chr(self.buf[0])
            body = self.buf[5:1 + length]
            self.buf = self.buf[1 + length:]
            out.append((kind, body))
        return out


class Connection:
    """What one client connection did: chunks in order, messages by type."""

    def __init__(self):
        self.events = []  # (direction 'c'|'s', time, nbytes)
        self.ready_index = None  # index in events of the first server ReadyForQuery
        self.client_messages = {}
        self.queries = []  # texts of simple Query and Parse messages

    def turns(self):
        """(connect round trips, work round trips, unanswered client turns)."""
        connect = work = unanswered = 0
        i, n = 0, len(self.events)
        while i < n:
            if self.events[i][0] != "c":
                i += 1
                continue
            start = i
            while i < n and self.events[i][0] == "c":
                i += 1
            answered = i < n
            if not answered:
                unanswered += 1
            elif self.ready_index is not None and start > self.ready_index:
                work += 1
            else:
                connect += 1
        return connect, work, unanswered


class _Forwarder:
    """Listens on a free loopback port; each client connection is paired with
    a new connection to `target_port` (TCP_NODELAY on both) and handed to
    `_serve(client, server)`."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve(client, server)

    def _serve(self, client, server):
        raise NotImplementedError


class Proxy(_Forwarder):
    """Listens on a free loopback port and forwards to `target_port`."""

    def __init__(self, target_port):
        self.connections = []
        self.lock = threading.Lock()
        self.threads = []
        super().__init__(target_port)

    def reset(self):
        self.wait_idle()
        with self.lock:
            self.connections = []

    def wait_idle(self, timeout=5.0):
        end = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, end - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]

    def _serve(self, client, server):
        conn = Connection()
        with self.lock:
            self.connections.append(conn)
        t = threading.Thread(target=self._pump, args=(client, server, conn), daemon=True)
        self.threads.append(t)
        t.start()

    def _pump(self, client, server, conn):
        cparse, sparse = _Parser(True), _Parser(False)
        peers = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 60)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    side = "c" if s is client else "s"
                    conn.events.append((side, time.monotonic(), len(data)))
                    if side == "c":
                        for kind, body in cparse.feed(data):
                            conn.client_messages[kind] = conn.client_messages.get(kind, 0) + 1
                            if kind == "ssl-request":
                                sparse.single_byte_reply = True
                            elif kind == "Q":
                                conn.queries.append(body.rstrip(b"\0").decode("utf-8", "replace"))
                            elif kind == "P":
                                parts = body.split(b"\0")
                                if len(parts) > 1:
                                    conn.queries.append(parts[1].decode("utf-8", "replace"))
                    else:
                        for kind, _ in sparse.feed(data):
                            if kind == "Z" and conn.ready_index is None:
                                conn.ready_index = len(conn.events) - 1
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass


def split_sql(text):
    """Splits SQL text at top-level semicolons (quotes, dollar quotes and
    comments respected); returns the non-empty statements."""
    out, cur, i, n = [], [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
            continue
        if c in "'\"":
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if m:
                tag = m.group(0)
                j = text.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                cur.append(text[i:j])
                i = j
                continue
        if c == ";":
            s = "".join(cur).strip()
            if s:
                out.append(s)
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    s = "".join(cur).strip()
    if s:
        out.append(s)
    return out


_ENTRY = re.compile(r"^@@ \S+ \S+ \S+ \[(\d+)\] db=(\S*) app=(.*?): (\w+):  (.*)$")


def logged_statements(log_text, db):
    """From a server log (LOG_PREFIX), the statements logged for database
    `db`: a list of (kind, text), kind being `statement` (a simple Query, all
    of its SQL) or `execute` (an extended-protocol execution)."""
    entries, cur = [], None
    for line in log_text.splitlines():
        if line.startswith("@@ "):
            m = _ENTRY.match(line)
            cur = None
            if not m or m.group(2) != db or m.group(4) != "LOG":
                continue
            body = m.group(5)
            kind = None
            if body.startswith("statement: "):
                kind, body = "statement", body[len("statement: "):]
            elif body.startswith("execute "):
                kind, body = "execute", body.split(": ", 1)[-1]
            if kind:
                cur = [kind, body]
                entries.append(cur)
        elif cur is not None:
            cur[1] += "\n" + line.lstrip("\t")
    return [(k, t) for k, t in entries]


class DelayProxy(_Forwarder):
    """A delay line between client and server: every chunk is forwarded
    `one_way` seconds after it arrived, in order, without holding back the
    chunks behind it (a pipelined burst is delayed once, not per message),
    so a request/response round trip costs 2 x one_way more, as a network
    would. Listens on a free loopback port."""

    def __init__(self, target_port, one_way):
        self.one_way = one_way
        super().__init__(target_port)

    def _serve(self, client, server):
        for src, dst in ((client, server), (server, client)):
            self._pipe(src, dst)

    def _pipe(self, src, dst):
        queue, cond = [], threading.Condition()

        def read():
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with cond:
                    queue.append((time.monotonic() + self.one_way, data))
                    cond.notify()
                if not data:
                    return

        def write():
            while True:
                with cond:
                    while not queue:
                        cond.wait()
                    due, data = queue.pop(0)
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()
