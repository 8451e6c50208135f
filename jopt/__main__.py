"""``python -m jopt``: the same command as the ``jopt`` console script (see :mod:`jopt.cli`)."""

from jopt.cli import main

if __name__ == "__main__":
  raise SystemExit(main())
