"""`python -m perceptual_services up|down|status|env` (what `make services-up` / `services-down` run)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
