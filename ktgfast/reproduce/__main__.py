"""``python -m ktgfast.reproduce ...`` = ``ktgfast reproduce ...``."""
import sys

from .cli import main

sys.exit(main())
