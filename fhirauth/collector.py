"""The garbage collector of a serving process.

CPython collects its youngest generation after every 700 new container objects. A request makes many,
and with dozens of requests in flight a good part of them are still alive at a collection:
they are promoted and scanned again by the older generations, and every full collection walks all
that start-up loaded (schemas, routes, templates, the validators). In the bench that was 11–16 % of
the CPU of a token request (bench/README.md, "Garbage collection"). A serving process therefore
collects the youngest generation less often, and once started freezes what start-up made, which no
collection scans again (gc.freeze). Memory is not the price: reference counting still frees almost
everything at once, the collector only finds cycles (the bench's server RSS stayed at 117–119 MB).
"""

from __future__ import annotations

import gc

# Ten times the default: measured against 700 (the default), 7,000 and 20,000; the last two alike.
YOUNGEST_THRESHOLD = 7000


def tune() -> None:
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)


def freeze_startup() -> None:
    """Move everything alive now out of the collector's sight (after collecting start-up's garbage)."""
    gc.collect()
    gc.freeze()
