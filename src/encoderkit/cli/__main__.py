import sys

from encoderkit.cli import main

sys.exit(main())
