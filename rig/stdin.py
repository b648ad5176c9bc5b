#!/usr/bin/python3
"""rig/stdin.py SOCKET: the rig's standard input, carried to the command inside.

Listens on SOCKET (a Unix stream socket), accepts QEMU's connection (its virtserialport
chardev), and copies this process's stdin to it. At end of input it closes the connection:
the port inside then reads end of file, as a pipe would, once the command has read the rest.

When stdin is a terminal it is put in raw mode (output processing kept, since the command's
output reaches the same terminal), so that keystrokes, Ctrl-C included, go to the command as
they do under `vireo run`; Ctrl-] then q quits (the rig is sent SIGINT and ends as on Ctrl-C),
and Ctrl-] twice sends one Ctrl-]. The terminal is restored however this process ends.
"""
import os
import select
import signal
import socket
import sys
import termios
import tty

ESCAPE = 0x1D  # Ctrl-]


saved = None  # the terminal's settings, while this process has it in raw mode


def restore(*_):
    if saved is not None:
        termios.tcsetattr(0, termios.TCSANOW, saved)
    os._exit(0)


def main() -> int:
    global saved
    # The rig stops this process with SIGTERM when its command ends: leave the terminal as found.
    signal.signal(signal.SIGTERM, restore)
    signal.signal(signal.SIGHUP, restore)
    # Ctrl-C at a terminal reaches the whole foreground group; the rig handles it and stops this.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path = sys.argv[1]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    # The rig starts QEMU once the socket exists; QEMU connects as it starts.
    conn, _ = listener.accept()
    listener.close()

    is_tty = os.isatty(0)
    if is_tty and os.tcgetpgrp(0) != os.getpgrp():
        # A rig started in the background of an interactive shell: reading or setting up the
        # terminal would stop this process (SIGTTIN, SIGTTOU). Its command gets no input instead.
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
        return 0
    if is_tty:
        attrs = termios.tcgetattr(0)
        tty.setraw(0)
        raw = termios.tcgetattr(0)
        raw[1] |= termios.OPOST | termios.ONLCR
        saved = attrs
        termios.tcsetattr(0, termios.TCSANOW, raw)

    escape = False
    try:
        while True:
            # QEMU makes its stdout non-blocking, and at a terminal that is this stdin's open file
            # too: wait for input rather than read and get EAGAIN.
            select.select([0], [], [])
            try:
                data = os.read(0, 4096)
            except BlockingIOError:
                continue
            if not data:
                break
            if is_tty:
                out = bytearray()
                for b in data:
                    if escape:
                        escape = False
                        if b in (ord("q"), ord("Q")):
                            os.kill(os.getppid(), signal.SIGINT)
                            return 0
                        out.append(b)
                    elif b == ESCAPE:
                        escape = True
                    else:
                        out.append(b)
                data = bytes(out)
            conn.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the rig has stopped: nothing left to read the input
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSANOW, saved)
    # End of input: half-close, which QEMU reads as end of file after the rest of the input and
    # then disconnects, which the port inside reads as end of file. A full close now would be a
    # hang-up, on which QEMU drops at once whatever it has not yet passed to the guest.
    try:
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
