"""HTTP/3 server tests: real QUIC on loopback, real peers (buf curl, gtlsclient, qh3).

The generated Greeter lives in ``generated/`` as top-level ``greeter.v1``
modules; put that directory on ``sys.path`` here, before any test module of
this package imports them.
"""

import sys
from pathlib import Path

GENERATED = str(Path(__file__).resolve().parents[3] / "generated")
if GENERATED not in sys.path:
    sys.path.insert(0, GENERATED)
