"""Fail CI on an installed dependency with a known vulnerability that a newer release fixes.

Runs pip-audit against the project's virtual environment. Where the vulnerability service cannot be
reached (a machine with a package mirror only), nothing can be audited: say so loudly, do not fail.
"""

import json
import subprocess
import sys
from pathlib import Path

venv_bin = Path(sys.executable).parent
result = subprocess.run(
    [venv_bin / "pip-audit", "--skip-editable", "--progress-spinner", "off", "--format", "json"],
    capture_output=True,
    text=True,
)
try:
    report = json.loads(result.stdout)
except json.JSONDecodeError:
    print(f"pip-audit failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
    raise SystemExit(1) from None

audited = [d for d in report["dependencies"] if "skip_reason" not in d]
fixable = [(d["name"], d["version"], v["id"], v["fix_versions"]) for d in audited for v in d["vulns"]]
fixable = [f for f in fixable if f[3]]
if not audited:
    print("WARNING: pip-audit reached no vulnerability database: nothing was audited", file=sys.stderr)
for name, version, vuln, fixes in fixable:
    print(f"{name} {version}: {vuln}, fixed in {', '.join(fixes)}", file=sys.stderr)
print(f"pip-audit: {len(audited)} of {len(report['dependencies'])} packages audited, {len(fixable)} fixable")
raise SystemExit(1 if fixable else 0)
