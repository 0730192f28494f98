"""Entry for `python -m engine` and `torchrun -m engine`."""

import os
import sys

from engine.cli import main
from engine.launch import report_status

code = main()
if "RANK" in os.environ:
    report_status(code)  # for `engine launch`, which maps the workers' statuses to its own
    # A torchrun worker has finished (its process group is destroyed, files are flushed). Leave without
    # interpreter finalisation: gloo's C++ threads can abort the process while Python objects are torn
    # down after destroy_process_group (pytorch/pytorch#179291), turning a finished run into a SIGABRT.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
