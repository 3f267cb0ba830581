"""A minimal PostgreSQL client (protocol 3.0, simple queries, trust authentication only).

Why not psql: the stale-read checker needs the moment each commit was acknowledged, to well under
a millisecond, for hundreds of commits per second; a psql process per statement costs tens of
milliseconds, and a long-lived psql behind a pipe hides when its answer arrived. bench/ uses the
Python standard library only (bench/README.md), so this speaks the wire protocol itself: enough
for `Query` → rows or an error → `ReadyForQuery`, in autocommit, over TCP with Nagle off. Every
bench server (the throw-away clusters and pgpool in front of them) trusts 127.0.0.1, so the only
authentication answered is AuthenticationOk; anything else is a clear error.
"""

from __future__ import annotations

import socket
import struct
from typing import List, Optional, Tuple

PROTOCOL_3_0 = 196608


class PgError(Exception):
    """The server answered with an ErrorResponse (or the connection broke)."""


class Connection:
    """One session. Not thread-safe; one per worker process."""

    def __init__(self, host: str, port: int, user: str, database: str,
                 application_name: str = "voxperf-bench", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        params = {"user": user, "database": database, "application_name": application_name}
        body = struct.pack("!i", PROTOCOL_3_0)
        for key, value in params.items():
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            kind, payload = self._message()
            if kind == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code != 0:
                    raise PgError(f"{host}:{port} asks for authentication method {code}; the "
                                  "bench servers must trust 127.0.0.1")
            elif kind == b"E":
                raise PgError(error_text(payload))
            elif kind == b"Z":
                return
            # S (ParameterStatus), K (BackendKeyData), N (notice): nothing to do.

    def _fill(self, need: int) -> None:
        while len(self.buffer) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PgError("connection closed by the server")
            self.buffer += chunk

    def _message(self) -> Tuple[bytes, bytes]:
        self._fill(5)
        kind = bytes(self.buffer[:1])
        length = struct.unpack("!i", self.buffer[1:5])[0]
        self._fill(1 + length)
        payload = bytes(self.buffer[5:1 + length])
        del self.buffer[:1 + length]
        return kind, payload

    def query(self, sql: str) -> List[List[Optional[str]]]:
        """Runs ``sql`` (one or more statements, autocommit) and returns the rows of the last
        result as text; raises ``PgError`` on an error (after the server is ready again)."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(data) + 4) + data)
        rows: List[List[Optional[str]]] = []
        error: Optional[str] = None
        while True:
            kind, payload = self._message()
            if kind == b"D":
                rows.append(data_row(payload))
            elif kind == b"T":
                rows = []
            elif kind == b"E":
                error = error_text(payload)
            elif kind == b"Z":
                if error is not None:
                    raise PgError(error)
                return rows

    def scalar(self, sql: str) -> Optional[str]:
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise PgError(f"expected one value from {sql!r}, got {rows!r}")
        return rows[0][0]

    def close(self) -> None:
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        except OSError:
            pass
        self.sock.close()


def data_row(payload: bytes) -> List[Optional[str]]:
    count = struct.unpack("!h", payload[:2])[0]
    values: List[Optional[str]] = []
    at = 2
    for _ in range(count):
        length = struct.unpack("!i", payload[at:at + 4])[0]
        at += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[at:at + length].decode())
            at += length
    return values


def error_text(payload: bytes) -> str:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')}" + (
        f" (SQLSTATE {fields['C']})" if "C" in fields else "")
