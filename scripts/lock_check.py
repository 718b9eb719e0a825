"""Compare the running environment with requirements.lock.

    python scripts/lock_check.py            # exit 1 and list differences if any
    python scripts/lock_check.py --extras   # print installed packages the lock does not name

The comparison is `pip freeze --all --exclude-editable` (attndsl itself is the
editable install and not part of the lock) against the lock's pinned lines,
by normalised project name and exact version.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def parse(lines) -> dict[str, str]:
    """name → version from ``name==version`` lines (comments and blanks ignored)."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise SystemExit(f"{LOCK.name}: not a pinned line: {raw.strip()!r}")
        name, version = line.split("==", 1)
        out[_name(name)] = version.strip()
    return out


def installed() -> dict[str, str]:
    text = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout
    return parse(line for line in text.splitlines() if not line.startswith("-e "))


def differences(locked: dict[str, str], have: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(set(locked) | set(have)):
        want, got = locked.get(name), have.get(name)
        if want is None:
            problems.append(f"{name}=={got} is installed but not in the lock")
        elif got is None:
            problems.append(f"{name}=={want} is in the lock but not installed")
        elif want != got:
            problems.append(f"{name}: lock has {want}, installed {got}")
    return problems


def main(argv: list[str]) -> int:
    locked = parse(LOCK.read_text(encoding="utf-8").splitlines())
    have = installed()
    if argv[1:] == ["--extras"]:
        print(" ".join(sorted(set(have) - set(locked))))
        return 0
    problems = differences(locked, have)
    if problems:
        print(f"the environment differs from {LOCK.name} (rerun bash scripts/setup.sh):", file=sys.stderr)
        for line in problems:
            print("  " + line, file=sys.stderr)
        return 1
    print(f"environment matches {LOCK.name} ({len(locked)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
