#!/usr/bin/env python3
"""Checks dist/teams-cdr-functions.zip (made by scripts/package.sh): host.json at the root naming an
executable that is in the zip with its exec bit; one `<Function>/function.json` per folder under
handlers/ and nothing else; and a binary that needs at most glibc 2.28. Ends with
`package: N passed, N failed`."""

import json
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_GLIBC = (2, 28)


def main(zip_path: str) -> int:
    passed = failed = 0

    def step(ok: bool, what: str, detail: str = "") -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n{detail}" if detail and not ok else ""))

    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        host = json.loads(zf.read("host.json")) if "host.json" in names else {}
        step(bool(host), "host.json at the root of the zip")
        exe = host.get("customHandler", {}).get("description", {}).get("defaultExecutablePath", "")
        step(exe in names, f"the executable host.json names ({exe!r}) is in the zip")
        mode = (zf.getinfo(exe).external_attr >> 16) if exe in names else 0
        step(bool(mode & 0o111), f"{exe} keeps its exec bit (mode {oct(mode)})")
        expected = {"host.json", exe} | {f"{d.name}/function.json" for d in (ROOT / "handlers").iterdir() if d.is_dir()}
        step(names == expected, "the zip holds exactly host.json, the binary and every handlers/<Function>/function.json",
             f"missing: {sorted(expected - names)}, unexpected: {sorted(names - expected)}")
        with tempfile.TemporaryDirectory() as tmp:
            binary = pathlib.Path(tmp) / "bin"
            binary.write_bytes(zf.read(exe)) if exe in names else None
            symbols = subprocess.run(["objdump", "-T", str(binary)], capture_output=True, text=True, check=False).stdout
    versions = sorted({tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9]+(?:\.[0-9]+)+)", symbols)})
    highest = versions[-1] if versions else None
    step(highest is not None and highest <= MAX_GLIBC, f"highest GLIBC symbol version needed: {'.'.join(map(str, highest or ()))} (at most 2.28)")
    print(f"package: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "dist" / "teams-cdr-functions.zip")))
