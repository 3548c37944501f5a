#!/usr/bin/env python3
"""atheris harness for the strict .mhpt reader (OSS-Fuzz conventions; libFuzzer flags pass through).

Any input must end in records or in a one-line TraceFormatError with a position, never another
exception or a hang; the fast and the construct decoder must agree; whatever decodes must survive
binary -> text -> binary (fuzz/surfaces.py check_format). Half of the inputs get their CRCs
recomputed first, so mutations reach record decoding and the index.

    fuzz/trace_format_fuzzer.py -runs=100000 -rss_limit_mb=2048 -timeout=25 corpus/seeds
"""

from __future__ import annotations

import atheris

from fuzz import OWN_PACKAGES

with atheris.instrument_imports(include=OWN_PACKAGES):
    from fuzz.surfaces import check_format

from fuzz.harness import run

TestOneInput = check_format  # libFuzzer's name

if __name__ == "__main__":
    run(check_format)
