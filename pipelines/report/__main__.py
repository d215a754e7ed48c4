"""`python -m pipelines.report [--schedule-run]`: what the DVC stage report runs."""
import sys

from . import main

sys.exit(main())
