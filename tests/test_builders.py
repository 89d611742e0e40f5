"""The hot-path builders make exactly what the classes' own constructors make."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqcontract._builders import BUILT_FIELDS, build_claim, build_message, build_push
from mqcontract.messages import Claim, Message, QueuedMessage

ids = st.integers(min_value=-(2**63), max_value=2**63 - 1)
names = st.text(min_size=1, max_size=20)
seconds = st.floats(allow_nan=False)
tokens = st.one_of(st.integers(), st.text(max_size=10))


@pytest.mark.parametrize("cls", list(BUILT_FIELDS))
def test_a_builder_sets_every_field_of_its_class_and_the_class_has_no_post_init(
    cls: type,
) -> None:
    """A field added to the class (or reordered) fails here until its builder sets it."""
    assert BUILT_FIELDS[cls] == tuple(f.name for f in dataclasses.fields(cls))
    assert not hasattr(cls, "__post_init__")


@given(ids, names, st.binary(max_size=50), st.integers(1, 2**31), seconds, tokens, seconds)
def test_built_values_equal_constructed_ones(
    msg_id: int,
    queue: str,
    payload: bytes,
    count: int,
    enqueued_at: float,
    token: int | str,
    timeout: float,
) -> None:
    claim = build_claim(queue, msg_id, token, timeout)
    assert claim == Claim(queue, msg_id, token, timeout)
    assert hash(claim) == hash(Claim(queue, msg_id, token, timeout))
    for held in (claim, None):
        built = build_message(msg_id, queue, payload, count, enqueued_at, held)
        made = QueuedMessage(msg_id, queue, payload, count, enqueued_at, held)
        assert built == made
        assert repr(built) == repr(made)
        assert hash(built) == hash(made)
        for claimed in (True, False):
            assert build_push(built, claimed) == Message(made, claimed)


def test_built_values_stay_frozen() -> None:
    message = build_message(1, "jobs", b"{}", 1, 0.0, build_claim("jobs", 1, 1, 30.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.msg_id = 2  # type: ignore[misc]
    assert message.claim is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.claim.token = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        build_push(message, False).claimed = True  # type: ignore[misc]
