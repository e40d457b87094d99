from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from store.links import make_link_code, read_link_code

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_a_code_fits_telegram_start_parameters_and_reads_back() -> None:
    code = make_link_code("s3cret", 42, expires_at=NOW + timedelta(days=30), order_id=7)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", code)
    link = read_link_code("s3cret", code)
    assert link is not None
    assert (link.customer_id, link.order_id, link.expires_at) == (42, 7, NOW + timedelta(days=30))
    assert not link.expired(NOW)
    assert link.expired(NOW + timedelta(days=30))


def test_each_code_has_its_own_token() -> None:
    a = read_link_code("k", make_link_code("k", 1, expires_at=NOW))
    b = read_link_code("k", make_link_code("k", 1, expires_at=NOW))
    assert a is not None and b is not None and a.token_id != b.token_id


def test_forged_tampered_and_malformed_codes_read_as_none() -> None:
    code = make_link_code("k", 1, expires_at=NOW)
    # A middle character: the last one also holds base64 padding bits that decode to nothing.
    flipped = code[:10] + ("A" if code[10] != "A" else "B") + code[11:]
    assert read_link_code("other-secret", code) is None
    assert read_link_code("k", flipped) is None
    for junk in ["", "x", "!!!!", "a" * 65, code + "AA"]:
        assert read_link_code("k", junk) is None
