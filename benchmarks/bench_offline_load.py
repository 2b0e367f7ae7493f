"""How long ``gw.models.load("vgg16")`` takes to give up without a network: with an empty
Keras cache it must fail fast (seconds, not a long connection timeout) with
:class:`gradcam_widget.models.WeightsUnavailableError` naming the missing file.

Run it on a machine without network access (online it would download 528 MB, so it refuses)::

    .venv/bin/python benchmarks/bench_offline_load.py            # prints the seconds
    .venv/bin/python benchmarks/bench_offline_load.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time


def _online(host: str = "storage.googleapis.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def one_round() -> float:
    """Seconds for one failing load, each in a fresh empty Keras cache."""
    from gradcam_widget.data import models

    with tempfile.TemporaryDirectory() as home:
        os.environ["KERAS_HOME"] = home
        started = time.monotonic()
        try:
            models.load("vgg16")
        except models.WeightsUnavailableError:
            return time.monotonic() - started
    raise RuntimeError("load('vgg16') did not fail: are the weights reachable?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if _online():
        raise SystemExit("online: this would download the 528 MB VGG16 weights; run it offline")
    seconds = [one_round() for _ in range(args.rounds)]
    print(f"offline load('vgg16') gave up in {statistics.median(seconds):.2f} s "
          f"(median of {len(seconds)}; the former test bound was 30 s)")  # fmt: skip


if __name__ == "__main__":
    main()
