"""``python -m traces.lab --setup`` | ``python -m traces.lab SCENARIO --kernel 6.1|6.12 -o OUT.mhpt|OUT.json``."""

from __future__ import annotations

import sys

from traces.lab.cli import main

sys.exit(main())
