"""Game accounts: what the buyer typed becomes the committed string only when it means what it shows
(gateway.services.accounts). Direct calls, no gateway: the route tests are in test_quotes.py."""

from __future__ import annotations

import pytest

from adapters.provider_file import AccountFormat
from gateway.services import InvalidField
from gateway.services.accounts import check_account_format, clean_account


@pytest.mark.parametrize(
    ("typed", "committed"),
    [
        pytest.param("123456789", "123456789", id="plain"),
        pytest.param("  123456789 \t", "123456789", id="surrounding-whitespace"),
        pytest.param("123456789\u3000", "123456789", id="ideographic-space-at-the-end"),
        pytest.param("player_one", "player_one", id="letters"),
        # Canonically equivalent: the same characters, decomposed; committed in NFC.
        pytest.param("Zoe\u0308", "Zo\u00eb", id="decomposed-diaeresis"),
        pytest.param("\u738b\u5c0f\u660e", "\u738b\u5c0f\u660e", id="cjk"),
    ],
)
def test_account_that_means_what_it_shows_is_committed_trimmed_and_nfc(typed: str, committed: str) -> None:
    assert clean_account(typed) == committed


@pytest.mark.parametrize(
    ("typed", "understood", "named"),
    [
        pytest.param(
            "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
            "123456789",
            "FULLWIDTH DIGIT ONE",
            id="full-width-digits",
        ),
        pytest.param(
            "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
            "123456789",
            "ARABIC-INDIC DIGIT ONE",
            id="arabic-indic-digits",
        ),
        pytest.param(
            "\u06f1\u06f2\u06f3\u06f4\u06f5", "12345", "EXTENDED ARABIC-INDIC DIGIT ONE", id="persian"
        ),
        pytest.param("1234\u200b5678", "12345678", "U+200B ZERO WIDTH SPACE", id="zero-width-space"),
        pytest.param("\ufeff12345678", "12345678", "ZERO WIDTH NO-BREAK SPACE", id="byte-order-mark"),
        pytest.param("1234\u00a05678", "1234 5678", "NO-BREAK SPACE", id="no-break-space-inside"),
        pytest.param(
            "\uff50\uff4c\uff41\uff59\uff45\uff52",
            "player",
            "FULLWIDTH LATIN SMALL LETTER P",
            id="full-width-letters",
        ),
        pytest.param("12345678\u00b2", "123456782", "SUPERSCRIPT TWO", id="superscript"),
    ],
)
def test_look_alike_account_is_refused_with_what_was_understood(
    typed: str, understood: str, named: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        clean_account(typed)
    assert caught.value.field == "account"
    assert f"send exactly {understood!r}" in caught.value.message
    assert named in caught.value.message
    # Sending what we understood is accepted as is: the message never asks for something refused.
    assert clean_account(understood) == understood


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param(" \t ", id="blank"),
        pytest.param("1" * 65, id="too-long"),
        pytest.param("1234\x005678", id="nul"),
        pytest.param("1234\ue0005678", id="private-use"),
        pytest.param("1234\ud8005678", id="lone-surrogate"),
    ],
)
def test_account_that_is_no_account_is_refused(typed: str) -> None:
    with pytest.raises(InvalidField) as caught:
        clean_account(typed)
    assert caught.value.field == "account"


DIGITS = AccountFormat(pattern=r"\d+", min_length=5, max_length=12, description="5 to 12 digits")
LETTERS = AccountFormat(pattern="[a-z0-9_]+", skus={"gem-1": {"pattern": "[a-z]+", "description": "letters"}})


def test_account_must_fit_every_provider_the_sku_routes_to() -> None:
    formats = {"digits": DIGITS, "letters": LETTERS}
    check_account_format("12345", "gem-2", ["digits", "letters", "undeclared"], formats)
    with pytest.raises(
        InvalidField, match=r"'12345' does not have the expected format for gem-1 \(expected: letters\)"
    ):
        check_account_format("12345", "gem-1", ["digits", "letters"], formats)
    with pytest.raises(
        InvalidField, match=r"shorter than 5 characters for gem-2 \(expected: 5 to 12 digits\)"
    ):
        check_account_format("1234", "gem-2", ["letters", "digits"], formats)
    # A provider that declares nothing is not consulted.
    check_account_format("anything at all", "gem-2", ["undeclared"], formats)


def test_backslash_d_in_a_provider_pattern_means_ascii_digits() -> None:
    assert DIGITS.for_sku("x").problem("12345") is None
    assert (
        DIGITS.for_sku("x").problem("\u0661\u0662\u0663\u0664\u0665") == "does not have the expected format"
    )
