"""Payload helpers shared by the cases."""

from __future__ import annotations

import base64
import bz2
import decimal
import gzip
import json
import lzma
import pickle
import zlib

from mqcontract.capabilities import PayloadFidelity


def body(i: int, tag: str = "m") -> bytes:
    """A small payload that is not JSON, so every fidelity returns it byte for byte."""
    return f"{tag}-{i}".encode()


def same_payload(fidelity: PayloadFidelity, sent: bytes, received: bytes) -> bool:
    """Whether ``received`` honours the declared fidelity for ``sent``."""
    if sent == received:
        return True
    if fidelity is PayloadFidelity.JSON_VALUE:
        try:
            return same_json(_exact(sent), _exact(received))
        except (ValueError, RecursionError):
            return False
    return False


def _exact(document: bytes) -> object:
    """A JSON document with its numbers as decimals: ``1e23`` and the 24 digits jsonb
    writes for it are one number, which as a float and an int they are not."""
    return json.loads(document, parse_float=decimal.Decimal, parse_int=decimal.Decimal)


def same_json(a: object, b: object) -> bool:
    """Equal JSON values, by JSON's types: ``true`` is not ``1`` and ``[]`` is not ``{}``
    (Python's ``==`` says ``True == 1 == 1.0``); numbers compare by value, exactly, so
    ``1e2`` and ``100`` are one number, as a store that normalizes numbers (jsonb) makes
    them, and a 20-digit integer rounded to a double is another. Iterative: nesting is as
    deep as a hostile payload makes it."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if _kind(x) != _kind(y):
            return False
        if isinstance(x, dict):
            assert isinstance(y, dict)
            if x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            assert isinstance(y, list)
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def _kind(value: object) -> str:
    """A JSON value's type; ints and floats are one kind, numbers."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | decimal.Decimal):
        return "number"
    return type(value).__name__


#: What a producer may have compressed, encoded or enveloped itself before sending.
_PLAIN = b"a look-alike payload, compressed by its producer; " * 40
#: Bytes that do not compress, so a stored (level 0) deflate stream is over 1 KiB.
_NOISE = bytes((i * 167 + (i >> 8) * 13) % 256 for i in range(1500))


def _zlib_streams() -> tuple[tuple[str, bytes], ...]:
    """Valid zlib streams with each header a sniffer may test (78 01, 78 5e, 78 9c, 78 da),
    one of them over 1 KiB, and two that only start like one."""
    streams = [
        (
            f"zlib stream (level {level}, header {zlib.compress(_PLAIN, level)[:2].hex()})",
            zlib.compress(_PLAIN, level),
        )
        for level in (1, 3, 6, 9)
    ]
    streams.append(("zlib stored stream over 1 KiB", zlib.compress(_NOISE, 0)))
    streams.append(("zlib header, then garbage", b"\x78\x9cnot deflate at all"))
    streams.append(("zlib stream cut short", zlib.compress(_PLAIN, 9)[:-5]))
    return tuple(streams)


#: Payloads a provider that transforms what LOOKS compressed, encoded or enveloped
#: changes: valid compressed streams (zlib with every header, gzip, zstd, lz4, bzip2, xz),
#: byte order marks, JSON and base64 text, envelope markers (this suite's PGMQ envelope,
#: others' JSON and prefix conventions, PostgreSQL's bytea hex form), a pickle. Each must
#: come back as sent (per the declared fidelity), on every path. Every one is under 4 KiB.
SNIFFABLE: tuple[tuple[str, bytes], ...] = (
    *_zlib_streams(),
    ("gzip stream", gzip.compress(_PLAIN, mtime=0)),
    ("gzip magic, then garbage", b"\x1f\x8b\x08\x00garbage"),
    (
        "zstd frame",
        bytes.fromhex(
            "28b52ffd60d006dd0100240361206c6f6f6b2d616c696b65207061796c6f61642c20636f6d70"
            "726573736564206279206974732070726f64756365723b200100b279fd1514"
        ),
    ),
    (
        "lz4 frame",
        bytes.fromhex(
            "04224d186440a744000000ff2361206c6f6f6b2d616c696b65207061796c6f61642c20636f6d"
            "70726573736564206279206974732070726f64756365723b203200ffffffffffffff8d506365"
            "723b20000000004cb3f5d0"
        ),
    ),
    ("bzip2 stream", bz2.compress(_PLAIN)),
    ("xz stream", lzma.compress(_PLAIN)),
    ("snappy stream identifier", b"\xff\x06\x00\x00sNaPpY"),
    ("UTF-8 BOM and text", "\ufeffa byte order mark".encode()),
    ("UTF-8 BOM alone", b"\xef\xbb\xbf"),
    ("UTF-16 LE text with BOM", "\ufeffutf-16 text\r\n".encode("utf-16-le")),
    ("UTF-16 BE text with BOM", "\ufeffutf-16 text".encode("utf-16-be")),
    ("UTF-32 LE text with BOM", "\ufeffutf-32".encode("utf-32-le")),
    ("JSON string", b'"a JSON string"'),
    ("JSON string of base64", b'"aGVsbG8gd29ybGQ="'),
    ("compact JSON object", b'{"k":"v","n":[1,2]}'),
    ("base64 text", base64.b64encode(_PLAIN[:60])),
    ("base64 of binary", base64.b64encode(bytes(range(48)))),
    ("base64 of a zlib stream", base64.b64encode(zlib.compress(_PLAIN))),
    ("PGMQ envelope look-alike", b'{"$mqcontract_b64": "aGVsbG8gd29ybGQ="}'),
    ("extended-JSON binary", b'{"$binary": {"base64": "aGVsbG8=", "subType": "00"}}'),
    ("JSON envelope with an encoding", b'{"data": "aGVsbG8=", "encoding": "base64"}'),
    ("JSON envelope with a bytes key", b'{"__bytes__": "aGVsbG8="}'),
    ("base64 prefix marker", b"base64:aGVsbG8gd29ybGQ="),
    ("b64 prefix marker", b"b64:aGVsbG8gd29ybGQ="),
    ("bytea hex form", b"\\x68656c6c6f20776f726c64"),
    ("MIME encoded word", b"=?utf-8?b?aGVsbG8gd29ybGQ=?="),
    ("pickle of bytes", pickle.dumps(b"pickled", protocol=4)),
)

#: Payloads that differ from a normalized form only by line endings or whitespace, or
#: end in what a line-framed or C-string channel strips (CR, LF, NUL, blanks).
WHITESPACE: tuple[bytes, ...] = (
    b"a\r\nb",
    b"a\nb",
    b"a\rb",
    b"a\n\rb",
    b"line\r\n",
    b"line\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"x  ",
    b"  x",
    b"x\t",
    b"a  \t b",
    b"x\x00",
    b"x\n\n\n",
    b" ",
    b"\t",
    b"x\x0b\x0c",
    b"\xef\xbb\xbfbom",
    b"line\r\n\r\n",
    b"\x00",
    b"x\r\n\x00",
)


def fitting(corpus: tuple[tuple[str, bytes], ...], limit: int) -> list[tuple[str, bytes]]:
    """The payloads of ``corpus`` a provider whose maximum is ``limit`` bytes takes."""
    return [(what, payload) for what, payload in corpus if len(payload) <= limit]


#: Names every provider must reject; SQL and AMQP metacharacters, unicode, length.
INVALID_NAMES: tuple[str, ...] = (
    "",
    "UPPER",
    "MixedCase",
    "has space",
    "semi;colon",
    "q'; DROP TABLE pgmq.meta; --",
    'quote"d',
    "dash-name",
    "dot.name",
    "amq.gen-queue",
    "slash/name",
    "caf\u00e9",
    "\u961f\u5217",
    "1starts_with_digit",
    "a" * 48,
    "tab\tname",
    "nul\x00name",
)
