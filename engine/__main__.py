"""Entry for `python -m engine` and `torchrun -m engine`."""

import os
import sys

from engine.cli import main

code = main()
if "RANK" in os.environ:
    # A torchrun worker has finished (its process group is destroyed, files are flushed). Leave without
    # interpreter finalisation: gloo's C++ threads can abort the process while Python objects are torn
    # down after destroy_process_group (pytorch/pytorch#179291), turning a finished run into a SIGABRT.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
