"""`python -m sunfish_lib.train ...` = `sunfish train ...` (works under torchrun)."""

import sys

from sunfish_lib.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
