"""Entry point of the frozen app: the same command line as `kl3m-desk`."""

import multiprocessing
import sys

from kl3m_desk.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
