"""`python -m kl3m_desk` runs the same command line as `kl3m-desk`."""

import sys

from kl3m_desk.cli import main

sys.exit(main())
