#!/usr/bin/env python3
"""Checks the Bicep templates without a Bicep CLI (none can be installed here):

1. every `.bicep` file under infra/ parses with pycep-parser 0.7.1;
2. checkov scans them (framework bicep, settings in infra/.checkov.yaml) with no failed check, and
   every file is really scanned (checkov skips files its parser cannot read without saying so);
3. the checks can fail: a copy with a syntax error must not parse, and a copy with insecure settings
   must fail checkov.

Prints one line per step and ends with `infra: N passed, N failed`; exits non-zero on any failure.
Run it with the Python of the venv that scripts/check-infra.sh prepares.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV = pathlib.Path(sys.executable).parent / "checkov"


def parse_errors(directory: pathlib.Path) -> list[str]:
    from pycep import BicepParser

    parser = BicepParser()
    errors = []
    for path in sorted(directory.rglob("*.bicep")):
        try:
            parser.parse(text=path.read_text())
        except Exception as e:  # pycep raises lark errors of several kinds
            errors.append(f"{path.relative_to(directory)}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return errors


def checkov(directory: pathlib.Path) -> dict:
    out = subprocess.run(
        [
            str(CHECKOV),
            "--config-file", str(INFRA / ".checkov.yaml"),
            "--external-checks-dir", str(ROOT / "tools" / "checkov_checks"),
            "-d", str(directory),
            "-o", "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"checkov printed no JSON (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == "bicep")
    return report


def scanned_files(report: dict) -> set[str]:
    """Files with at least one resource that the inventory check (tools/checkov_checks) saw."""
    return {c["file_path"].lstrip("/") for c in report.get("results", {}).get("passed_checks", []) if c["check_id"] == "CKV_TCDR_1"}


def main() -> int:
    passed = failed = 0

    def step(ok: bool, what: str, detail: str = "") -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n{detail}" if detail and not ok else ""))

    bicep_files = sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep"))
    errors = parse_errors(INFRA)
    step(not errors, f"pycep-parser parses {len(bicep_files)} Bicep files", "\n".join(errors))

    report = checkov(INFRA)
    summary = report.get("summary", {})
    failures = [f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}" for c in report["results"].get("failed_checks", [])]
    real_passes = sum(1 for c in report["results"].get("passed_checks", []) if c["check_id"] != "CKV_TCDR_1")
    step(not failures, f"checkov: {real_passes} checks passed, {len(failures)} failed", "\n".join(failures))
    missing = sorted(set(bicep_files) - scanned_files(report))
    step(not missing and summary.get("parsing_errors", 1) == 0, "checkov scanned every Bicep file", f"not scanned: {missing}, parsing errors: {summary.get('parsing_errors')}")

    with tempfile.TemporaryDirectory() as tmp:
        broken = pathlib.Path(tmp) / "broken"
        shutil.copytree(INFRA, broken)
        main_bicep = broken / "main.bicep"
        main_bicep.write_text(main_bicep.read_text().replace("resource identity 'Microsoft", "resource identity = 'Microsoft", 1))
        step(bool(parse_errors(broken)), "a seeded syntax error is caught")

        insecure = pathlib.Path(tmp) / "insecure"
        shutil.copytree(INFRA, insecure)
        storage = insecure / "modules" / "storage.bicep"
        text = storage.read_text()
        for secure, weak in [("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"), ("supportsHttpsTrafficOnly: true", "supportsHttpsTrafficOnly: false")]:
            assert secure in text, f"storage.bicep no longer contains {secure!r}: update this test"
            text = text.replace(secure, weak)
        storage.write_text(text)
        app = insecure / "modules" / "functionapp.bicep"
        app_text = app.read_text()
        assert "httpsOnly: true" in app_text, "functionapp.bicep no longer contains httpsOnly: true: update this test"
        app.write_text(app_text.replace("httpsOnly: true", "httpsOnly: false"))
        caught = {c["check_id"] for c in checkov(insecure)["results"].get("failed_checks", [])}
        step({"CKV_AZURE_44", "CKV_AZURE_3", "CKV_AZURE_70"} <= caught, "insecure settings fail checkov (storage TLS 1.0 and HTTP, app over HTTP)", f"failed checks: {sorted(caught)}")

    print(f"infra: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
