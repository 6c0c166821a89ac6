#!/usr/bin/env python3
"""Zips a staged package folder with Unix permissions kept (the binary must stay executable on the
Functions host): `zip_package.py <folder> <zip>`. Entries are sorted and timestamps fixed, so the same
input gives the same zip."""

import os
import pathlib
import sys
import zipfile


def main(folder: str, target: str) -> None:
    root = pathlib.Path(folder)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (os.stat(path).st_mode & 0o777 | 0o100000) << 16
            info.create_system = 3  # Unix, so the permission bits are honoured
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
