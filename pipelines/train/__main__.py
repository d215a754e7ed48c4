"""`python -m pipelines.train JOB [--resume] [--no-ray]`: the DVC train stages' command."""
import sys

from . import main

sys.exit(main())
