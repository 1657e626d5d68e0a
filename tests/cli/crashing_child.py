"""A child for tests/cli/test_supervision.py: says its last words on stderr and exits with 3, after
announcing itself (``CRASH_AT=running``) or before (``CRASH_AT=start``).

    python -m cardless.cli.child tests.cli.crashing_child
"""

from __future__ import annotations

import os
import sys

from cardless.cli.child import announce

if __name__ == "__main__":
    if os.environ.get("CRASH_AT") == "running":
        announce("ready")
    sys.stderr.write("crashing on purpose\n")
    sys.stderr.flush()
    sys.exit(3)
