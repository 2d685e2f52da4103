"""``python -m syllabus.cli``: the ``syllabus`` command."""

import sys

from syllabus.cli import main

sys.exit(main())
