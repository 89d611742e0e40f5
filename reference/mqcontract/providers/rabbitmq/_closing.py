"""Which channels this provider has begun to close: nothing more may be written to them.

aiormq sends ``channel.close`` and marks the channel closed only when ``close-ok``
returns; until then its ``basic_ack``/``basic_nack`` still write. The broker frees the
channel on the close, and a frame that arrives on it afterwards is a connection error
(``CHANNEL_ERROR - expected 'channel.open'``): the whole connection closes, with every
channel and claim on it. Every settlement frame checks :func:`writable` first, in the same
step as its write (aiormq queues a frame without suspending), so it is queued before the
close or not at all; what was not written goes back to its queue with the channel.
"""

from __future__ import annotations

import weakref
from typing import Protocol

__all__ = ["begin_close", "writable"]


class _Closable(Protocol):
    @property
    def is_closed(self) -> bool: ...


_CLOSING: weakref.WeakSet[_Closable] = weakref.WeakSet()


def begin_close(channel: _Closable) -> None:
    """``channel`` is about to be closed: from now on nothing is written to it."""
    _CLOSING.add(channel)


def writable(channel: _Closable) -> bool:
    """Whether a frame may still be written to ``channel``."""
    return not channel.is_closed and channel not in _CLOSING
