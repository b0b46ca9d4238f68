"""A microphone for wyoming-satellite's --mic-command in tests/wyoming.rs:
writes a raw 16 kHz 16-bit mono file to stdout at real-time pace, then
silence for as long as it is read.

    python paced_mic.py FILE.raw"""

import sys
import time

CHUNK = 1024 * 2  # bytes: 1024 samples, 64 ms
audio = open(sys.argv[1], "rb").read()
out = sys.stdout.buffer
start = time.monotonic()
sent = 0
while True:
    piece = audio[sent:sent + CHUNK] if sent < len(audio) else b""
    piece = piece.ljust(CHUNK, b"\0")
    out.write(piece)
    out.flush()
    sent += CHUNK
    # Never ahead of the wall clock.
    ahead = start + sent / 32000 - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
