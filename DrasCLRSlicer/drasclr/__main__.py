import logging
import os
import sys

from .cli import main

code = main()
# the outputs are in place and closed: leave without tearing down thousands of modules (torch, SimpleITK), which
# takes about 0.8 s that the shells' child processes would otherwise wait for
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
