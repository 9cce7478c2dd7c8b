import sys

from carebus.cli import main

sys.exit(main())
