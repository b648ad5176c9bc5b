#!/usr/bin/env python3
"""The host's side of the Linux guest's device checks, run inside the rig beside `vireo run`:
a TCP listener on the TAP address that reports the SHA-256 of what the guest sent, and the
Unix socket PATH_PORT where a guest's vsock connection to host port PORT arrives (Firecracker's
convention), which answers the guest's line. Writes READY once both listen; quits after 600 s.

usage: host-peer.py TCP_ADDR TCP_PORT VSOCK_UNIX_PATH READY_FILE"""
import hashlib, os, socket, sys, threading

addr, port, unix_path, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((addr, port))
tcp.listen(1)
if os.path.exists(unix_path):
    os.unlink(unix_path)
uds = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
uds.bind(unix_path)
uds.listen(1)

def serve_tcp():
    conn, _ = tcp.accept()
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(65536):
        digest.update(chunk)
        total += len(chunk)
    print(f"host-peer: net received {total} bytes sha256 {digest.hexdigest()}", flush=True)

def serve_vsock():
    conn, _ = uds.accept()
    line = b""
    while not line.endswith(b"\n") and (chunk := conn.recv(4096)):
        line += chunk
    text = line.decode().strip()
    print(f"host-peer: vsock received '{text}'", flush=True)
    conn.sendall(f"host got: {text}\n".encode())
    conn.close()

threads = [threading.Thread(target=f, daemon=True) for f in (serve_tcp, serve_vsock)]
for t in threads:
    t.start()
open(ready, "w").close()
for t in threads:
    t.join(600)
