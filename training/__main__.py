"""``python -m ganserve.training ARGS`` = ``ganserve train ARGS``: the entry point for torchrun
(``torchrun --nproc_per_node N -m ganserve.training --family dcgan ...``)."""

import sys

from ganserve.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
