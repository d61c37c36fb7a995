import sys

from sam_block.cli.app import main

sys.exit(main())
