import sys

from moofa.cli import main

sys.exit(main())
