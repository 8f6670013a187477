"""``python -m seedguard``: the same command as the ``seedguard`` console script."""

from __future__ import annotations

from seedguard.cli import main

if __name__ == "__main__":
    main()
