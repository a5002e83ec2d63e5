"""``python -m ragrec`` runs the CLI."""

from ragrec.cli import main

if __name__ == "__main__":
    main()
