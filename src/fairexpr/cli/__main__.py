"""``python -m fairexpr.cli ...`` — same as the ``fairexpr`` console script."""
import sys

from . import main

sys.exit(main())
