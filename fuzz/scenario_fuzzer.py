#!/usr/bin/env python3
"""atheris harness for scenario TOML through ``mhp simulate -o``: layouts and a trace that reads
back, or an error naming the file and line (fuzz/surfaces.py check_scenario).

    fuzz/scenario_fuzzer.py -rss_limit_mb=2048 -timeout=60 -dict=build/fuzz/scenario_fuzzer.dict corpus/scenarios
"""

from __future__ import annotations

import atheris

from fuzz import OWN_PACKAGES

with atheris.instrument_imports(include=OWN_PACKAGES):
    from fuzz.surfaces import check_scenario

from fuzz.harness import run

if __name__ == "__main__":
    run(check_scenario)
