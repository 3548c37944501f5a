#!/usr/bin/env python3
"""atheris harness for the model-driven commands on whatever the reader accepts: replay, layout,
the plot's data and the Perfetto export end, or fail with an error naming the file and position
(fuzz/surfaces.py check_commands). Half the mutations are the model fuzzer's structure-aware ones.

    fuzz/commands_fuzzer.py -rss_limit_mb=2048 -timeout=60 corpus/seeds
"""

from __future__ import annotations

import atheris

from fuzz import OWN_PACKAGES

with atheris.instrument_imports(include=OWN_PACKAGES):
    from fuzz.surfaces import check_commands

from fuzz.harness import run, structure_or_bytes

if __name__ == "__main__":
    run(check_commands, custom_mutator=structure_or_bytes)
