"""Rebuild service/domain/data/common-passwords.txt from the two packages it unites.

    npm pack @zxcvbn-ts/language-common@4.1.3     # zxcvbn-ts-language-common-4.1.3.tgz
    pip download --no-deps django==5.2.19         # django-5.2.19-py3-none-any.whl
    .venv/bin/python tools/common_passwords.py zxcvbn-ts-language-common-4.1.3.tgz \
        django-5.2.19-py3-none-any.whl

Every entry is put in `password_key` form (NFKC, case-folded, stripped), de-duplicated and sorted,
one a line, so the service loads the file without normalising it and an update is a readable
diff. Update the versions and counts in common-passwords.NOTICE (and the README) with it.
"""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
import zipfile
from pathlib import Path

from service.domain.common_passwords import password_key

OUTPUT = Path(__file__).resolve().parent.parent / "service/domain/data/common-passwords.txt"
ZXCVBN_TS_MEMBER = "package/src/passwords.json"
DJANGO_MEMBER = "django/contrib/auth/common-passwords.txt.gz"


def zxcvbn_ts(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as archive:
        member = archive.extractfile(ZXCVBN_TS_MEMBER)
        if member is None:
            raise SystemExit(f"{tarball}: no {ZXCVBN_TS_MEMBER}")
        passwords: list[str] = json.load(member)
    return passwords


def django(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(DJANGO_MEMBER)).decode("utf-8")
    return [line for line in text.split("\n") if line]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    first, second = zxcvbn_ts(Path(argv[0])), django(Path(argv[1]))
    keys = {password_key(p) for p in first + second} - {""}
    if any("\n" in key or "\r" in key for key in keys):
        raise SystemExit("an entry holds a line break")
    OUTPUT.write_text("".join(f"{key}\n" for key in sorted(keys)), encoding="utf-8")
    print(f"{len(first)} + {len(second)} entries -> {len(keys)} in {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
