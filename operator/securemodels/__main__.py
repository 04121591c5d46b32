import sys

from securemodels.cli import main

sys.exit(main())
