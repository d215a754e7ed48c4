"""`python -m pipelines.benchmark sr|style`: what the DVC stages benchmark_sr and benchmark_style run."""
import sys

from . import main

sys.exit(main())
