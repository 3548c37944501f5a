#!/usr/bin/env python3
"""atheris harness for ``mhp compile`` on arbitrary text: a trace every reader accepts (and that
dumps and compiles back to the same bytes), or an error at its line (fuzz/surfaces.py check_text).
Seeds are the text forms of the seed traces (``mhp fuzz --target text`` writes them).

    fuzz/trace_text_fuzzer.py -rss_limit_mb=2048 -timeout=25 -dict=build/fuzz/trace_text_fuzzer.dict SEEDS
"""

from __future__ import annotations

import atheris

from fuzz import OWN_PACKAGES

with atheris.instrument_imports(include=OWN_PACKAGES):
    from fuzz.surfaces import check_text

from fuzz.harness import run

if __name__ == "__main__":
    run(check_text)
