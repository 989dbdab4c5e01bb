"""``python -m birads_calc`` is the same program as the ``birads-calc`` console script."""

from birads_calc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
