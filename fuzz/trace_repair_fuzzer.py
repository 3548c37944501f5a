#!/usr/bin/env python3
"""atheris harness for tolerant reading: ``mhp verify`` and ``mhp repair`` on any bytes; repair's
output always verifies and keeps every record verify read (fuzz/surfaces.py check_repair).

    fuzz/trace_repair_fuzzer.py -rss_limit_mb=2048 -timeout=25 corpus/seeds
"""

from __future__ import annotations

import atheris

from fuzz import OWN_PACKAGES

with atheris.instrument_imports(include=OWN_PACKAGES):
    from fuzz.surfaces import check_repair

from fuzz.harness import run

if __name__ == "__main__":
    run(check_repair)
