"""Run the original llm-consortium's test suite against this package.

Downloads the original's sdist (``pip download --no-deps --no-binary :all:
llm-consortium==VERSION``) into a temporary directory outside the repository,
extracts its ``tests/`` and runs them with pytest against the installed
``llm_consortium`` (this package). Prints the pass count. A report, not a
gate: exits 0 whenever the tests ran. Nothing of the original is kept.

    python scripts/test_compat.py 0.8.0
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def download_tests(version: str, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-binary", ":all:", f"llm-consortium=={version}", "-d", str(into),
        ],
        check=True,
    )
    (archive,) = into.glob("llm_consortium-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        tar.extractall(into, members=members, filter="data")
    (tests,) = into.glob("llm_consortium-*/tests")
    return tests


def main() -> int:
    version = sys.argv[1] if len(sys.argv) > 1 else "0.8.0"
    with tempfile.TemporaryDirectory(prefix="llm-consortium-compat-") as tmp:
        tests = download_tests(version, Path(tmp))
        # Run from the tests' own directory, so the repository's conftest and
        # sources stay out of the way: the package under test is the installed one.
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             "-o", "addopts=", "--continue-on-collection-errors", "--rootdir", str(tests), str(tests)],
            cwd=tests,
            capture_output=True,
            text=True,
        )
        # Counted in the source: a file that fails to import collects nothing.
        total = sum(
            len(re.findall(r"^\s*def test_", path.read_text(), re.MULTILINE))
            for path in tests.rglob("test_*.py")
        )
    print(result.stdout[-6000:])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|error|errors)", summary)}
    passed = counts.get("passed", 0)
    print(f"llm-consortium {version} original tests: {passed} of {total} pass against this package")
    return 0


if __name__ == "__main__":
    sys.exit(main())
