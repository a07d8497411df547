"""The wire between a web worker and its decoder processes: framed requests and replies."""

from __future__ import annotations

import struct

# Sent once by a decoder when its limits are set and it reads requests.
READY = b"R"
# Request: magic, model input height and width, length of the image bytes that follow.
REQUEST = struct.Struct(">4sHHQ")
REQUEST_MAGIC = b"DEC1"
# Reply: status, height, width, length of the payload that follows (the RGB uint8 pixels,
# row-major, or for an error "code\n" + a client-safe message in UTF-8).
REPLY = struct.Struct(">BHHI")
STATUS_OK = 0
STATUS_ERROR = 1
# Upper bound on an error payload: a decoder can never make the parent read much.
MAX_ERROR_BYTES = 4096
