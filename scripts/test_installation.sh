#!/usr/bin/env bash
# Checks that llm-consortium is installed into llm and its commands work.
# Exits non-zero when a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
echo "=== Testing llm-consortium Installation ==="
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
echo "Virtualenv: ${VIRTUAL_ENV:-none}"
python --version
status=0
check() {
    local label=$1; shift
    if "$@" >/dev/null 2>&1; then echo "ok   $label"; else echo "FAIL $label"; status=1; fi
}
check "pip show llm-consortium" python -m pip show llm-consortium
check "llm plugins lists llm-consortium" bash -c "llm plugins | grep -q 'llm-consortium'"
check "import llm_consortium (create_consortium)" python -c "from llm_consortium import create_consortium"
check "llm consortium --help" llm consortium --help
check "llm --version" llm --version
llm consortium --help | head -5
echo "=== Test Complete ==="
exit $status
