"""Shared by server.py and client.py: the wire format every interop program speaks.

Requests and replies are google.protobuf.StringValue messages (field 1, a string), encoded by
hand so that no generated code is needed: grpc-go, C-core and grpc-js programs agree on them.
"""


def encode_string(s):
    b = s.encode("utf-8")
    n = len(b)
    out = bytearray(b"\x0a")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    return bytes(out) + b


def decode_string(b):
    if not b:
        return ""
    if b[0] != 0x0A:
        raise ValueError("not a StringValue")
    n, shift, i = 0, 0, 1
    while True:
        byte = b[i]
        n |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    return b[i : i + n].decode("utf-8")
