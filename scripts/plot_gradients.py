"""Plot a gradient log written by `GradientLogger` as a PNG.

    python scripts/plot_gradients.py runs/cifar/gradients.csv [--out runs/cifar/gradients.png]

Top: a layers x steps heat map of log10 gradient norms; bottom: each layer's update/weight
ratio with the healthy 1e-3 marked. `--out` defaults to the log's path with `.png`.
A missing or empty log is one line on stderr and exit status 2.
"""

import argparse
import os
import sys

from headstart.callbacks.gradient_log import plot_gradient_log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("log", help="the CSV file written by GradientLogger")
    parser.add_argument("--out", help="the PNG to write (default: LOG with .png)")
    args = parser.parse_args(argv)
    out_path = args.out or os.path.splitext(args.log)[0] + ".png"
    try:
        plot_gradient_log(args.log, out_path)
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
