"""`python -m pxzip` runs the command line."""

from pxzip.cli import main

if __name__ == "__main__":
    main()
