"""`python -m pipelines.release train|export|register ...`: how the shipped models are made."""
import sys

from . import main

sys.exit(main())
