"""A TCP proxy on 127.0.0.1 that can swallow the reply to one command and hang up (a reply lost in transit)."""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    """Forwards to ``target``; once armed, the first reply to a request containing ``marker`` is dropped
    and both sides of that connection are closed: the server ran the command, the client never hears."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker = b""
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes) -> None:
        self.marker = marker

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            pending = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, pending), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, pending), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, pending: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self.marker and self.marker in data:
                    self.marker = b""
                    pending.set()
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, pending: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if pending.is_set():
                    # The command ran; its reply goes nowhere.
                    _close(client, server)
                    self.dropped.set()
                    return
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
