"""Game accounts as the buyer typed them, turned into the exact string the order commits to.

The account is the one input the buyer cannot check on chain: a look-alike (full-width or
Arabic-Indic digits, an invisible character) is quoted, paid and topped up to a string that is not
the buyer's account. So an account is accepted only when it means what it shows:

- surrounding whitespace is trimmed and the text put in NFC (same characters, one encoding): neither
  changes what the buyer sees, and the quote returns the committed string;
- anything that would change under NFKC, any decimal digit outside 0-9 and any invisible
  (format) character is refused, with what we understood, so the buyer confirms by sending that;
- the result must fit the ``[account]`` format of every provider the SKU can be routed to.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

from adapters.provider_file import ACCOUNT_MAX_LENGTH, AccountFormat
from gateway.services._exceptions import InvalidField

__all__ = ["check_account_format", "clean_account"]


def clean_account(raw: str) -> str:
    """The account to commit to; raises ``InvalidField("account", ...)`` saying what was understood."""
    account = raw.strip()
    if not account:
        raise InvalidField("account", "must not be empty")
    if len(account) > ACCOUNT_MAX_LENGTH:
        raise InvalidField("account", f"must be at most {ACCOUNT_MAX_LENGTH} characters")
    # Control, private-use, unassigned and surrogate code points; format characters (Cf: zero-width
    # space, joiners, direction marks) are the invisible look-alikes answered below.
    if any(unicodedata.category(c) in {"Cc", "Co", "Cn", "Cs"} for c in account):
        raise InvalidField("account", "must not contain control, private-use or unassigned characters")
    account = unicodedata.normalize("NFC", account)
    understood = _understood(account)
    if understood != account:
        odd = _odd_characters(account)
        raise InvalidField(
            "account",
            f"contains look-alike or invisible characters ({odd}); we read it as {understood!r}. "
            f"If that is your account, send exactly {understood!r}",
        )
    return account


def check_account_format(
    account: str, sku: str, providers: Iterable[str], formats: Mapping[str, AccountFormat]
) -> None:
    """Refuse ``account`` unless it fits the format of every provider ``sku`` may be routed to (an
    order can fail over to any of them). Providers that declare no format are not consulted."""
    for provider in providers:
        declared = formats.get(provider)
        if declared is None:
            continue
        rule = declared.for_sku(sku)
        problem = rule.problem(account)
        if problem is not None:
            expected = f" (expected: {rule.description})" if rule.description else ""
            raise InvalidField("account", f"{account!r} {problem} for {sku}{expected}")


def _understood(account: str) -> str:
    """What a reader takes ``account`` to say: compatibility forms folded (NFKC), every decimal digit
    as its ASCII digit, invisible format characters dropped."""
    folded = unicodedata.normalize("NFKC", account)
    out: list[str] = []
    for c in folded:
        if unicodedata.category(c) == "Cf":
            continue
        digit = unicodedata.decimal(c, None)
        out.append(str(digit) if digit is not None else c)
    return "".join(out).strip()


def _odd_characters(account: str) -> str:
    """The characters that made ``account`` ambiguous, by Unicode name, the first three kinds."""
    names: list[str] = []
    for c in account:
        plain = c.isascii() or (
            unicodedata.normalize("NFKC", c) == c
            and unicodedata.category(c) != "Cf"
            and unicodedata.decimal(c, None) is None
        )
        if plain:
            continue
        name = f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}"
        if name not in names:
            names.append(name)
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
