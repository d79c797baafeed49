import sys

from medcf.cli import main

sys.exit(main())
