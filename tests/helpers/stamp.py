"""Frames that carry the wall-clock time they were made, as a barcode.

The time (32-bit milliseconds) is drawn as 32 large blocks in two rows, laid
out on a 1920x1080 grid and scaled to the frame's size, so it survives
encoding, scaling to a smaller simulcast layer and decoding. Shared by the
end-to-end benchmark and the tests that measure latency.
"""

import time

BITS = 32
# The layout at 1920x1080: 2 rows of 16 blocks of 96x96 px, 20 px apart.
REF_W, REF_H, BLOCK, GAP, MARGIN = 1920, 1080, 96, 20, 40


def now_ms():
    return int(time.time() * 1000) & 0xFFFFFFFF


def _blocks(width, height):
    sx, sy = width / REF_W, height / REF_H
    for bit in range(BITS):
        row, col = divmod(bit, 16)
        y, x = MARGIN + row * (BLOCK + GAP), MARGIN + col * (BLOCK + GAP)
        yield bit, int(y * sy), int(x * sx), max(1, int(BLOCK * sy)), max(1, int(BLOCK * sx))


def stamp(frame, value):
    """Draws `value` into `frame`, a luma plane (numpy array, height x width)."""
    height, width = frame.shape
    for bit, y, x, bh, bw in _blocks(width, height):
        frame[y : y + bh, x : x + bw] = 235 if (value >> bit) & 1 else 16


def read_stamp(y_plane, width, height):
    """The value drawn into a decoded luma plane of any size."""
    value = 0
    for bit, y, x, bh, bw in _blocks(width, height):
        if y_plane[y + bh // 2, x + bw // 2] > 128:
            value |= 1 << bit
    return value


def latency_ms(sent, at=None):
    """Milliseconds from `sent` (a stamp) to `at` (now), across the 32-bit wrap."""
    return ((now_ms() if at is None else at) - sent) & 0xFFFFFFFF
