"""``python -m portal.cli`` = ``slipway``."""
from . import main

main()
